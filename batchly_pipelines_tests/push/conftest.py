"""Fixtures for the push: a sandbox over real HTTP, an organisation connected to a fresh realm, a pusher.

``settings`` (local mode, pointing at this directory's ``sandbox``) is shared with the client's tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import ClientConfig, QuickBooksClient, WriteOp, WriteResult
from batchly_pipelines.quickbooks.oauth import TokenSet
from batchly_pipelines.services.connections import client_for_organization
from batchly_pipelines.services.push.organization import PushStats, push_organization
from batchly_pipelines.settings import Settings
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.connections import ConnectionStore
from batchly_pipelines_tests import factories as f
from batchly_pipelines_tests.quickbooks.conftest import settings
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxConfig, SandboxServer

__all__ = ["settings"]  # re-exported: tests import it from here

TIME_SCALE = 60.0  # client waits (backoff, 429) compressed like the sandbox's clock


def connect(engine: Engine, settings: Settings, organization_id: int, realm_id: str) -> None:
    """Store a connection of the organisation to the realm, with tokens minted by the sandbox."""
    tokens = TokenSet.from_response(SandboxAdmin(settings.qbo_base_url).tokens(realm_id))
    store = ConnectionStore(engine, settings.secret_key)
    store.save(organization_id, realm_id, "local", settings.qbo_base_url, tokens)


class Books:
    """Read access to one sandbox realm, straight from the server's state (no API calls counted); ``faults`` and
    ``act`` go through the admin API."""

    def __init__(self, sandbox: SandboxServer, realm_id: str) -> None:
        self.sandbox = sandbox
        self.realm_id = realm_id
        self.admin = SandboxAdmin(sandbox.base_url)

    def objects(self, entity: str) -> list[dict[str, Any]]:
        realm = self.sandbox.state.realm(self.realm_id)
        assert realm is not None
        with realm.lock:
            return [dict(obj) for obj in realm.objects[entity].values()]

    def by_doc_number(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for invoice in self.objects("Invoice"):
            found.setdefault(str(invoice.get("DocNumber")), []).append(invoice)
        return found

    def faults(self, **settings: Any) -> None:
        self.admin.set_faults(self.realm_id, **settings)

    def act(self, **action: Any) -> Any:
        return self.admin.action(self.realm_id, **action)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxServer]:
    """One sandbox for the session, throttle off (the throttle is the benchmark's business); a realm per test."""
    with SandboxServer(SandboxConfig(port=0, time_scale=TIME_SCALE, throttle=False)) as server:
        yield server


@pytest.fixture
def environment(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a Dagster deployment reads from its environment."""
    monkeypatch.setenv("QBO_ENVIRONMENT", "local")
    monkeypatch.setenv("QBO_BASE_URL", settings.qbo_base_url)
    monkeypatch.setenv("BATCHLY_SECRET_KEY", settings.secret_key)
    monkeypatch.setenv("BATCHLY_DATABASE_URL", settings.database_url)


@pytest.fixture
def org(engine: Engine, settings: Settings, sandbox: SandboxServer) -> int:
    """An organisation connected to a fresh, empty realm."""
    with engine.begin() as conn:
        organization_id = f.organization(conn)
    connect(engine, settings, organization_id, SandboxAdmin(sandbox.base_url).new_realm())
    return organization_id


@pytest.fixture
def client(engine: Engine, settings: Settings, org: int) -> Iterator[QuickBooksClient]:
    """The organisation's client, as production builds it (tokens and limits through the database)."""
    with client_for_organization(engine, settings, org, config=ClientConfig(time_scale=TIME_SCALE)) as qbo:
        yield qbo


@pytest.fixture
def books(sandbox: SandboxServer, client: QuickBooksClient) -> Books:
    return Books(sandbox, client.realm_id)


@pytest.fixture
def push(engine: Engine, client: QuickBooksClient, org: int) -> Callable[..., PushStats]:
    """Run the push for the organisation (keyword arguments go to ``push_organization``)."""

    def run(**kwargs: Any) -> PushStats:
        return push_organization(engine, client, org, worker="test-worker", **kwargs)

    return run


@pytest.fixture
def sent(client: QuickBooksClient, monkeypatch: pytest.MonkeyPatch) -> list[WriteOp]:
    """Every write the push hands to the client (the client still sends it to the sandbox)."""
    ops: list[WriteOp] = []
    write_batch = client.write_batch

    def recording(batch: Sequence[WriteOp]) -> list[WriteResult]:
        ops.extend(batch)
        return write_batch(batch)

    monkeypatch.setattr(client, "write_batch", recording)
    return ops


def queue_status(engine: Engine, entity_type: str, entity_id: int) -> tuple[str, str | None]:
    """(status, last_error) of the newest queue row of a record."""
    q = s.sync_queue.c
    row = (
        sa.select(q.status, q.last_error)
        .where(q.entity_type == entity_type, q.entity_id == entity_id)
        .order_by(q.id.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        status, error = conn.execute(row).one()
    return status, error


def update(engine: Engine, table: sa.Table, row_id: int, **values: Any) -> None:
    """An app write (it enqueues a push through the outbox trigger)."""
    with engine.begin() as conn:
        conn.execute(sa.update(table).where(table.c.id == row_id).values(**values))
