"""Fixtures for the scale tests: an unthrottled sandbox and organisations each connected to its own realm."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from cryptography.fernet import Fernet
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.oauth import TokenSet
from batchly_pipelines.store.connections import ConnectionStore
from batchly_pipelines_tests.support import factories
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxConfig, SandboxServer


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig(port=0, throttle=False)) as server:
        yield server


Connect = Callable[[str], tuple[int, str]]


@pytest.fixture
def connect(engine: Engine, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> Connect:
    """``connect(name)``: a new organisation called ``name`` connected to a new realm; ``(organisation, realm)``.
    The environment points the project's resources at this database and sandbox."""
    key = Fernet.generate_key().decode()
    for name, value in {
        "BATCHLY_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "BATCHLY_SECRET_KEY": key,
        "QBO_ENVIRONMENT": "local",
        "QBO_BASE_URL": sandbox.base_url,
    }.items():
        monkeypatch.setenv(name, value)
    admin = SandboxAdmin(sandbox.base_url)

    def _connect(name: str) -> tuple[int, str]:
        realm = admin.new_realm(company_name=name)
        with engine.begin() as conn:
            org = factories.organization(conn, name=name)
        tokens = TokenSet.from_response(admin.tokens(realm))
        ConnectionStore(engine, key).save(org, realm, "local", sandbox.base_url, tokens)
        return org, realm

    return _connect
