"""Fixtures for the QuickBooks client: a throttled, time-compressed sandbox over real HTTP, realms, clients.

The sandbox runs at ``TIME_SCALE`` (a documented minute lasts one second), with Intuit's limits on, so tests exercise
the real throttle windows quickly. Each test works in a fresh realm.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.fernet import Fernet
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import ClientConfig, QuickBooksClient
from batchly_pipelines.sandbox.server import SandboxConfig, SandboxServer
from batchly_pipelines.settings import LOCAL_CLIENT_ID, LOCAL_CLIENT_SECRET, LOCAL_REDIRECT_URI, Settings

TIME_SCALE = 60.0


def admin(base_url: str, path: str, body: dict[str, Any] | None = None, method: str = "POST") -> Any:
    """Call the sandbox's admin API and return its JSON answer (asserting success)."""
    response = requests.request(method, f"{base_url}/__sandbox__/{path}", json=body or {}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def counter(base_url: str, scope: str, name: str) -> int:
    """One sandbox counter (``scope`` is a realm id or ``global``)."""
    report = admin(base_url, "counters", method="GET")
    section = report["global"] if scope == "global" else report["realms"].get(scope, {})
    return int(section.get(name, 0))


class SandboxTokens:
    """Tokens minted by the sandbox's admin API (the client's TokenSource where token handling is not under test)."""

    def __init__(self, base_url: str, realm_id: str) -> None:
        self.base_url = base_url
        self.realm_id = realm_id
        self.token = self._mint()

    def _mint(self) -> str:
        return str(admin(self.base_url, f"realms/{self.realm_id}/tokens")["access_token"])

    def access_token(self) -> str:
        return self.token

    def refresh(self, rejected_access_token: str) -> str:
        self.token = self._mint()
        return self.token


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxServer]:
    """One throttled sandbox at TIME_SCALE for the whole session."""
    with SandboxServer(SandboxConfig(port=0, time_scale=TIME_SCALE, throttle=True)) as server:
        yield server


@pytest.fixture
def realm_id(sandbox: SandboxServer) -> str:
    """A fresh company."""
    return str(admin(sandbox.base_url, "realms")["realm_id"])


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
    return Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        data_dir=tmp_path,
        qbo_environment="local",
        qbo_base_url=sandbox.base_url,
        qbo_client_id=LOCAL_CLIENT_ID,
        qbo_client_secret=LOCAL_CLIENT_SECRET,
        qbo_redirect_uri=LOCAL_REDIRECT_URI,
        secret_key=Fernet.generate_key().decode(),
        webhook_verifier_token=None,
    )
