"""Fixtures for the pull: an unthrottled sandbox, a fresh realm per test, a Batchly organisation and a client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.quickbooks.oauth import TokenSet
from batchly_pipelines.store.connections import ConnectionStore
from batchly_pipelines_tests.support import factories
from batchly_pipelines_tests.support.pull import Company
from batchly_pipelines_tests.support.quickbooks import SandboxTokens
from batchly_pipelines_tests.support.sandbox_client import Qbo
from qbo_sandbox.server import SandboxConfig, SandboxServer


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxServer]:
    """One unthrottled sandbox for the session; every test works in its own realm."""
    with SandboxServer(SandboxConfig(port=0, throttle=False)) as server:
        yield server


@pytest.fixture
def company(engine: Engine, sandbox: SandboxServer) -> Iterator[Company]:
    with engine.begin() as conn:
        org = factories.organization(conn, timezone="America/New_York")
    qbo = Qbo(sandbox)
    client = QuickBooksClient(qbo.realm_id, sandbox.base_url, SandboxTokens(sandbox.base_url, qbo.realm_id))
    with client:
        yield Company(engine, sandbox, org, qbo, client)


@pytest.fixture
def connected(company: Company, monkeypatch: pytest.MonkeyPatch) -> Company:
    """The company's organisation connected to its realm through the token store, as ``batchly-sync connect`` does."""
    key = Fernet.generate_key().decode()
    url = company.engine.url.render_as_string(hide_password=False)
    for name, value in {
        "BATCHLY_DATABASE_URL": url,
        "BATCHLY_SECRET_KEY": key,
        "QBO_ENVIRONMENT": "local",
        "QBO_BASE_URL": company.sandbox.base_url,
    }.items():
        monkeypatch.setenv(name, value)
    tokens = company.qbo.admin.tokens(company.qbo.realm_id)
    ConnectionStore(company.engine, key).save(
        company.org, company.qbo.realm_id, "local", company.sandbox.base_url, TokenSet.from_response(tokens)
    )
    return company
