"""Helpers of the push tests (and benchmarks)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.oauth import TokenSet
from batchly_pipelines.services.push.checkpoint import Checkpointer, CheckpointResult, Outcome, RecordKey
from batchly_pipelines.services.push.organization import PushStats
from batchly_pipelines.settings import Settings
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.connections import ConnectionStore
from batchly_pipelines.store.queue import QueueItem
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxServer

TIME_SCALE = 60.0  # client waits (backoff, 429) compressed like the sandbox's clock
# a push lease for tests not about the lease: 2 real minutes (the default 2 QuickBooks minutes are 2 s at TIME_SCALE,
# which a loaded test machine can stall past)
LONG_LEASE = timedelta(minutes=2) * TIME_SCALE


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


def invoice_row(engine: Engine, invoice_id: int) -> dict[str, Any]:
    """The Batchly invoice row as it is now."""
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(s.invoices).where(s.invoices.c.id == invoice_id)).mappings().one())


def totals(books: Books) -> dict[str, list[Decimal]]:
    """Every QuickBooks invoice's total by DocNumber (a voided one totals 0)."""
    return {doc: [Decimal(str(i["TotalAmt"])) for i in found] for doc, found in books.by_doc_number().items()}


def make_due(engine: Engine) -> None:
    """Skip every backoff: pending rows are due now."""
    with engine.begin() as conn:
        conn.execute(sa.update(s.sync_queue).values(next_attempt_at=s.utcnow() - timedelta(seconds=1)))


def expire_leases(engine: Engine) -> None:
    """What waiting out a dead run's leases (and any takeover grace) achieves: its queue rows and realm lock are free
    again."""
    past = s.utcnow() - timedelta(days=1)
    with engine.begin() as conn:
        conn.execute(
            sa.update(s.sync_queue)
            .where(s.sync_queue.c.status == "in_progress")
            .values(lease_expires_at=past)
        )
        conn.execute(sa.update(s.qbo_push_locks).values(expires_at=past))


class Killed(BaseException):
    """Stands in for SIGKILL between QuickBooks' answer and the checkpoint: nothing after it runs."""


def lose_invoice_checkpoints(
    engine: Engine,
    push: Callable[..., PushStats],
    monkeypatch: pytest.MonkeyPatch,
    *,
    when: Callable[[Sequence[Outcome]], bool] | None = None,
) -> None:
    """Run a push that dies at its first invoice checkpoint (or the first one ``when`` picks): what QuickBooks
    applied before it stays there, Batchly never records it. The dead run's leases are expired afterwards."""
    write = Checkpointer.write
    dies_at = when or (lambda outcomes: any(outcome.entity_type == "invoice" for outcome in outcomes))

    def dies(
        self: Checkpointer, outcomes: Sequence[Outcome], items: dict[RecordKey, Sequence[QueueItem]]
    ) -> CheckpointResult:
        if dies_at(outcomes):
            raise Killed
        return write(self, outcomes, items)

    with monkeypatch.context() as patch:
        patch.setattr(Checkpointer, "write", dies)
        with pytest.raises(Killed):
            push()
    expire_leases(engine)
