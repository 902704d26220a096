"""Helpers of the push tests (and benchmarks)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.oauth import TokenSet
from batchly_pipelines.settings import Settings
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.connections import ConnectionStore
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxServer

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
