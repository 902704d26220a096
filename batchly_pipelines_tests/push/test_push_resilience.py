"""No duplicates: dropped connections after QuickBooks wrote, 503s, and a run killed between write and checkpoint."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.services.push.checkpoint import Checkpointer, CheckpointResult, Outcome
from batchly_pipelines.services.push.organization import Progress, PushStats
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.demo import create_demo
from batchly_pipelines.store.queue import RetryPolicy, SyncQueue
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.support.push import TIME_SCALE, Books

IMPATIENT = RetryPolicy(base_delay=timedelta(0), max_delay=timedelta(0))


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs, no cleanup catches it."""


def _demo_into(engine: Engine, org: int, invoices: int) -> None:
    """Demo data of another organisation, moved to ``org`` (the demo creates its own)."""
    demo = create_demo(engine, customers=12, items=6, invoices=invoices, seed=7)
    with engine.begin() as conn:
        for table in (s.customers, s.items, s.sales_orders, s.invoices, s.sync_queue):
            conn.execute(
                sa.update(table)
                .where(table.c.organization_id == demo.organization_id)
                .values(organization_id=org)
            )


def _lapse_queue_leases(engine: Engine) -> None:
    """What time does to a dead worker's queue rows: their leases lapse."""
    with engine.begin() as conn:
        conn.execute(
            sa.update(s.sync_queue)
            .where(s.sync_queue.c.status == "in_progress")
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def _push_until_done(push: Callable[..., PushStats], engine: Engine, rounds: int = 10) -> list[PushStats]:
    queue = SyncQueue(engine, IMPATIENT)
    runs = []
    for _ in range(rounds):
        runs.append(push(queue=queue))
        if not queue.due_by_organization():
            return runs
    raise AssertionError(f"still due after {rounds} pushes: {queue.depth()}")


def _assert_exactly_once(engine: Engine, books: Books, invoices: int) -> None:
    found = books.by_doc_number()
    assert len(found) == invoices and all(len(copies) == 1 for copies in found.values())
    assert len(books.objects("Customer")) == 12
    with engine.connect() as conn:
        unmapped = conn.execute(sa.select(sa.func.count()).where(s.invoices.c.qbo_id.is_(None))).scalar()
        mapped = set(conn.execute(sa.select(s.invoices.c.qbo_id)).scalars())
    assert unmapped == 0 and mapped == {copies[0]["Id"] for copies in found.values()}


def test_dropped_connections_and_503s_never_duplicate(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    _demo_into(engine, org, 150)
    books.faults(drop_after_write=0.25, error_503=0.15, seed=11)

    runs = _push_until_done(push, engine)

    books.faults()
    _assert_exactly_once(engine, books, 150)
    assert sum(run.api["retries"] for run in runs) > 0  # the faults did happen


def test_run_killed_after_quickbooks_wrote_is_resumed_without_duplicates(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    _demo_into(engine, org, 90)
    write = Checkpointer.write
    invoice_chunks = 0

    def dies_on_the_second_invoice_chunk(
        self: Checkpointer, outcomes: Sequence[Outcome], items: object
    ) -> CheckpointResult:
        nonlocal invoice_chunks
        if any(o.entity_type == "invoice" for o in outcomes):
            invoice_chunks += 1
            if invoice_chunks == 2:
                raise Killed
        return write(self, outcomes, items)  # type: ignore[arg-type]

    monkeypatch.setattr(Checkpointer, "write", dies_on_the_second_invoice_chunk)
    with pytest.raises(Killed):
        push(claim_size=1000)
    monkeypatch.setattr(Checkpointer, "write", write)
    with engine.connect() as conn:
        recorded = conn.execute(
            sa.select(sa.func.count()).where(s.invoices.c.qbo_id.is_not(None))
        ).scalar_one()
    lost = len(books.objects("Invoice")) - recorded
    assert lost == 30  # QuickBooks holds the killed chunk; Batchly never recorded it
    _lapse_queue_leases(engine)  # what time does to the dead run's rows (its lock went with it)

    runs = _push_until_done(push, engine)

    _assert_exactly_once(engine, books, 90)
    assert (
        sum(run.actions["invoice.link"] for run in runs) == lost
    )  # found by the DocNumber guard, not re-created


def test_a_live_run_keeps_its_leases_however_long_a_round_takes(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round that outlasts the lease: its first checkpoint holds it until the renewer has renewed four times — more
    than a whole lease has passed by the renewer's own clock, however loaded the machine — and then an intruder finds
    nothing to claim."""
    _demo_into(engine, org, 30)
    intruder: list[int] = []
    renewals = itertools.count(1)
    four_renewals = threading.Event()
    renew = SyncQueue.renew_leases

    def counted_renewal(self: SyncQueue, *args: Any, **kwargs: Any) -> int:
        renewed = renew(self, *args, **kwargs)
        if next(renewals) >= 4:
            four_renewals.set()
        return renewed

    monkeypatch.setattr(SyncQueue, "renew_leases", counted_renewal)

    def slow_progress(progress: Progress) -> None:
        if not intruder:
            assert four_renewals.wait(120), "the renewer stopped"  # four thirds of a lease, at least
            stolen = SyncQueue(engine).claim("intruder", limit=1000, lease=timedelta(minutes=1))
            intruder.append(len(stolen))

    # 6 s, renewed every 2 s: a 3 s lease can lapse on a machine loaded enough to starve the renewer a few seconds
    push(lease=timedelta(seconds=6 * TIME_SCALE), progress=slow_progress)

    assert intruder == [0]
    _assert_exactly_once(engine, books, 30)
