"""Fixtures for the QuickBooks client: a throttled, time-compressed sandbox over real HTTP, realms, clients.

The sandbox runs at ``TIME_SCALE`` (a documented minute lasts one second), with Intuit's limits on, so tests exercise
the real throttle windows quickly. Each test works in a fresh realm.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import ClientConfig, QuickBooksClient
from batchly_pipelines.settings import Settings
from batchly_pipelines_tests.support.quickbooks import TIME_SCALE, SandboxTokens
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxConfig, SandboxServer


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxServer]:
    """One throttled sandbox at TIME_SCALE for the whole session."""
    with SandboxServer(SandboxConfig(port=0, time_scale=TIME_SCALE, throttle=True)) as server:
        yield server


@pytest.fixture
def realm_id(sandbox: SandboxServer) -> str:
    """A fresh company."""
    return SandboxAdmin(sandbox.base_url).new_realm()


@pytest.fixture
def config() -> ClientConfig:
    """Client settings compressed like the sandbox."""
    return ClientConfig(time_scale=TIME_SCALE)


@pytest.fixture
def client(sandbox: SandboxServer, realm_id: str, config: ClientConfig) -> Iterator[QuickBooksClient]:
    """A client for the fresh realm, without a shared limiter (the server's throttle still applies)."""
    with QuickBooksClient(
        realm_id, sandbox.base_url, SandboxTokens(sandbox.base_url, realm_id), config=config
    ) as qbo:
        yield qbo


@pytest.fixture
def settings(sandbox: SandboxServer, engine: Engine, tmp_path: Path) -> Settings:
    """Local-mode settings pointing at the sandbox and the test database."""
    return Settings.from_env(
        {
            "BATCHLY_DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "QBO_BASE_URL": sandbox.base_url,
            "BATCHLY_SECRET_KEY": Fernet.generate_key().decode(),
        },
        cwd=tmp_path,
    )
