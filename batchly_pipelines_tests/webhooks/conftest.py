"""Fixtures for the webhook tests: an unthrottled sandbox, an organisation connected to a fresh realm (and more of them),
the receiver."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
from cryptography.fernet import Fernet
from sqlalchemy.engine import Engine
from starlette.applications import Starlette

from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.services.webhooks.receiver import create_app
from batchly_pipelines_tests.support import factories
from batchly_pipelines_tests.support.pull import Company
from batchly_pipelines_tests.support.quickbooks import SandboxTokens
from batchly_pipelines_tests.support.sandbox_client import Qbo
from batchly_pipelines_tests.support.webhooks import VERIFIER, connect
from qbo_sandbox.server import SandboxConfig, SandboxServer


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxServer]:
    """One unthrottled sandbox for the session; every test works in its own realm."""
    with SandboxServer(SandboxConfig(port=0, throttle=False)) as server:
        yield server


@pytest.fixture
def secret_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def company(engine: Engine, sandbox: SandboxServer, secret_key: str) -> Iterator[Company]:
    """An organisation connected (a ``qbo_connections`` row) to a fresh realm, with a client of that realm."""
    with engine.begin() as conn:
        org = factories.organization(conn, timezone="America/New_York")
    qbo = Qbo(sandbox)
    connect(engine, org, qbo.realm_id, sandbox.base_url, secret_key)
    with QuickBooksClient(
        qbo.realm_id, sandbox.base_url, SandboxTokens(sandbox.base_url, qbo.realm_id)
    ) as client:
        yield Company(engine, sandbox, org, qbo, client)


@pytest.fixture
def another_company(
    engine: Engine, sandbox: SandboxServer, secret_key: str
) -> Iterator[Callable[[], Company]]:
    """Makes another organisation, connected to a fresh realm of its own, as ``company`` is (on the same database)."""
    with contextlib.ExitStack() as clients:

        def make() -> Company:
            with engine.begin() as conn:
                org = factories.organization(
                    conn, name=f"Company {len(made) + 2}", timezone="America/New_York"
                )
            qbo = Qbo(sandbox)
            connect(engine, org, qbo.realm_id, sandbox.base_url, secret_key)
            tokens = SandboxTokens(sandbox.base_url, qbo.realm_id)
            client = clients.enter_context(QuickBooksClient(qbo.realm_id, sandbox.base_url, tokens))
            made.append(Company(engine, sandbox, org, qbo, client))
            return made[-1]

        made: list[Company] = []
        yield make


@pytest.fixture
def client_for(company: Company) -> Callable[[int, str], QuickBooksClient]:
    """A new client of the company's realm per call, as the drain asks for one per (organisation, realm)."""
    tokens = SandboxTokens(company.sandbox.base_url, company.qbo.realm_id)

    def new_client(organization_id: int, realm_id: str) -> QuickBooksClient:
        assert (organization_id, realm_id) == (company.org, company.qbo.realm_id)
        return QuickBooksClient(company.qbo.realm_id, company.sandbox.base_url, tokens)

    return new_client


@pytest.fixture
def app(engine: Engine) -> Starlette:
    """The receiver on the test database."""
    return create_app(engine, VERIFIER)
