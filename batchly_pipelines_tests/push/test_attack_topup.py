"""Attack on the top-up of short chunks (commit e9206e6, found by a helper session): ``_Push._more_invoices``
counted an attempt for every row it took without a lease check, unlike ``_chunk_runner`` (``self._fence()  # attempts
are counted only by the holder, for rows it is about to send``). Now it takes nothing once the lease is lost.

A chunk that passed its fence, then lost the realm (taken over while it planned: a pause, a dead renewal), still
takes the invoices of a chunk no thread started and bumps their rows' attempts; its writes are then refused and the
push is abandoned. Those rows were never sent, yet the next push claims them with an attempt burned — what
``SyncQueue.claim`` promises never happens ("crashed or abandoned runs do not burn the retry budget of rows they never
sent"), and what ``test_a_worker_that_lost_the_realm_claims_and_counts_nothing_more`` checks for claims.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import QuickBooksClient, WriteOp, WriteResult
from batchly_pipelines.services.push import organization as push_module
from batchly_pipelines.services.push.organization import PushAbandoned, push_organization
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.queue import RetryPolicy, SyncQueue
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.push.test_push_full_batches import (
    INVOICES,
    VOIDED,
    _doc_numbers,
    _EditingQueue,
    two_threads,
)
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.push import LONG_LEASE, TIME_SCALE, Books

__all__ = ["two_threads"]  # the fixture, shared

# the round of test_push_full_batches: 62 invoices (chunks of 30, 30 and 2), two of the first chunk voided after the
# claim, so the first chunk is 2 writes short


@pytest.mark.parametrize("noticed", [False, True], ids=["takeover-unnoticed", "takeover-noticed"])
def test_a_chunk_that_lost_the_realm_counts_no_attempt_for_the_invoices_it_tops_up_with(
    engine: Engine,
    org: int,
    two_threads: QuickBooksClient,
    books: Books,
    monkeypatch: pytest.MonkeyPatch,
    noticed: bool,
) -> None:
    with engine.begin() as conn:
        customer, item = f.customer(conn, org), f.item(conn, org)
    push_organization(  # the customer and the item: the round below holds invoices only
        engine,
        two_threads,
        org,
        worker="topup-worker",
        lease=LONG_LEASE,
        queue=SyncQueue(engine, RetryPolicy(time_scale=TIME_SCALE)),
    )
    with engine.begin() as conn:
        ids = [f.invoice(conn, org, customer, item, doc_number=f"TOPUP-{n:02}") for n in range(INVOICES)]
    queue = _EditingQueue(engine, [ids[i] for i in VOIDED])

    taken: list[int] = []
    took = threading.Event()
    real_more = push_module._Push._more_invoices

    def taken_over_before_the_top_up(self: Any, taker: Any, wanted: int) -> list[int]:
        if not took.is_set():
            # the realm is taken over while the short chunk planned (its fence passed before): another worker
            with engine.begin() as conn:
                conn.execute(
                    sa.update(s.qbo_push_locks).values(
                        owner="intruder", expires_at=utcnow() + timedelta(minutes=5)
                    )
                )
            if noticed:  # … and the push's renewer already found out
                self._lose("test: the renewal found worker intruder holding it")
        try:
            result = real_more(self, taker, wanted)
        finally:
            took.set()
        taken.extend(result)
        return result

    write_batch = two_threads.write_batch
    sent_docs: list[str] = []

    def recording(ops: Sequence[WriteOp], **options: Any) -> list[WriteResult]:
        took.wait(timeout=20)  # the second chunk goes out (or is refused) only after the first chunk's top-up
        result = write_batch(ops, **options)
        sent_docs.extend(_doc_numbers(ops))
        return result

    monkeypatch.setattr(push_module._Push, "_more_invoices", taken_over_before_the_top_up)
    monkeypatch.setattr(two_threads, "write_batch", recording)

    with pytest.raises(PushAbandoned):
        push_organization(
            engine, two_threads, org, worker="topup-worker", lease=LONG_LEASE, queue=queue, linger_seconds=0.0
        )

    assert took.is_set() and taken == [], taken  # a push that lost the company takes nothing more
    found = books.by_doc_number()
    assert "TOPUP-60" not in found and "TOPUP-61" not in found  # never sent
    assert not {"TOPUP-60", "TOPUP-61"} & set(sent_docs)
    q = s.sync_queue.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(q.entity_id, q.status, q.lease_owner, q.attempts).where(
                q.entity_type == "invoice", q.entity_id.in_([ids[60], ids[61]])
            )
        ).all()
    # never sent by a push that no longer held the company: no attempt of their retry budget is spent
    assert rows and all(row.attempts == 0 for row in rows), [tuple(row) for row in rows]
