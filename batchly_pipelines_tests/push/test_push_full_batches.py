"""A chunk short of writes takes invoices of a chunk not started yet, so its batch call goes out full.

A batch call costs one of the company's 20 to 40 a minute however few writes it carries. Invoices are cut into
chunks of 30 when a round is claimed, but some of a chunk may need no write by the time its thread reads them: the
app voided or corrected them meanwhile, they are refused or wait for something. A chaos run lost 3 to 8 % of its
writes per call that way (batch calls of 29 and 28 for an edit in flight). Such a chunk now takes as many invoices
of the newest chunk no thread has started; one that was emptied so does nothing. What it took travels with it: a
failure of the whole chunk fails them too, for a later retry, and nothing is pushed twice.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import ClientConfig, QuickBooksClient, WriteOp, WriteResult
from batchly_pipelines.services.connections import client_for_organization
from batchly_pipelines.services.push.organization import push_organization
from batchly_pipelines.settings import Settings
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.queue import QueueItem, RetryPolicy, SyncQueue
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.push import LONG_LEASE, TIME_SCALE, Books

INVOICES = 62  # one round: chunks of 30, 30 and 2
VOIDED = (0, 1)  # of the first chunk, voided by the app after the claim (never sent)


class _EditingQueue(SyncQueue):
    """The push's queue; right after the first claim of invoices, the app voids two of them."""

    def __init__(self, engine: Engine, voided: Sequence[int]) -> None:
        super().__init__(engine, RetryPolicy(time_scale=TIME_SCALE))
        self.voided = list(voided)

    def claim(self, worker: str, **options: Any) -> list[QueueItem]:
        items = super().claim(worker, **options)
        if self.voided and any(item.entity_id in self.voided for item in items):
            with self.engine.begin() as conn:
                conn.execute(
                    sa.update(s.invoices).where(s.invoices.c.id.in_(self.voided)).values(status="void")
                )
            self.voided = []
        return items


@pytest.fixture
def two_threads(engine: Engine, settings: Settings, org: int) -> Iterator[QuickBooksClient]:
    """A client with one request in flight: the push runs two chunks at once, the third waits for a thread."""
    config = ClientConfig(time_scale=TIME_SCALE, in_flight=1)
    with client_for_organization(engine, settings, org, config=config) as qbo:
        yield qbo


def _doc_numbers(ops: Sequence[WriteOp]) -> list[str]:
    return [str(op.body.get("DocNumber")) for op in ops if op.entity == "Invoice"]


@pytest.mark.parametrize("whole_chunk_fails", [False, True], ids=["sent", "chunk-fails-once"])
def test_a_chunk_that_lost_invoices_since_its_claim_takes_more_and_sends_a_full_batch(
    engine: Engine,
    org: int,
    two_threads: QuickBooksClient,
    books: Books,
    monkeypatch: pytest.MonkeyPatch,
    whole_chunk_fails: bool,
) -> None:
    def push() -> Any:
        return push_organization(
            engine, two_threads, org, worker="full-worker", lease=LONG_LEASE, queue=queue, linger_seconds=2.0
        )

    with engine.begin() as conn:
        customer, item = f.customer(conn, org), f.item(conn, org)
    queue = SyncQueue(engine, RetryPolicy(time_scale=TIME_SCALE))
    push()  # the customer and the item: the round below holds invoices only
    with engine.begin() as conn:
        ids = [f.invoice(conn, org, customer, item, doc_number=f"FULL-{n:02}") for n in range(INVOICES)]
    queue = _EditingQueue(engine, [ids[i] for i in VOIDED])
    write_batch = two_threads.write_batch
    calls: list[list[str]] = []
    first_sent = threading.Event()
    failed_once: list[bool] = []

    def recording(ops: Sequence[WriteOp], **options: Any) -> list[WriteResult]:
        docs = _doc_numbers(ops)
        if "FULL-30" in docs:  # the second chunk leaves only after the first: the third waits for a thread
            first_sent.wait(timeout=10)
        calls.append(docs)
        if "FULL-02" in docs:
            first_sent.set()
            if whole_chunk_fails and not failed_once:
                failed_once.append(True)
                raise RuntimeError("the chunk fails as a whole (a bug, an outage)")
        return write_batch(ops, **options)

    monkeypatch.setattr(two_threads, "write_batch", recording)

    stats = push()

    first = next(docs for docs in calls if "FULL-02" in docs)
    # the first chunk's 28 invoices and the last two of the third chunk, which had not started
    assert sorted(first) == sorted([f"FULL-{n:02}" for n in range(2, 30)] + ["FULL-60", "FULL-61"])
    if not whole_chunk_fails:
        assert sorted(len(docs) for docs in calls) == [30, 30]  # two full calls, not 28 + 30 + 2
    else:  # the failed chunk's records (those it took too) were retried later in this push: none lost
        assert failed_once == [True] and len(stats.errors) == 1
        failed = {int(i) for i in stats.errors[0].split(":")[0].removeprefix("invoice ").split(", ")}
        assert {ids[60], ids[61]} <= failed
    assert stats.actions["invoice.create"] == INVOICES - len(VOIDED)
    found = books.by_doc_number()
    expected = {f"FULL-{n:02}" for n in range(INVOICES)} - {f"FULL-{n:02}" for n in VOIDED}
    assert set(found) == expected
    assert all(len(copies) == 1 for copies in found.values())
    with engine.connect() as conn:
        open_rows = conn.execute(
            sa.select(sa.func.count()).where(s.sync_queue.c.status.in_(("pending", "in_progress", "dead")))
        ).scalar_one()
        unlinked = conn.execute(
            sa.select(sa.func.count()).where(
                s.invoices.c.organization_id == org,
                s.invoices.c.status == "open",
                s.invoices.c.qbo_id.is_(None),
            )
        ).scalar_one()
    assert open_rows == 0 and unlinked == 0
