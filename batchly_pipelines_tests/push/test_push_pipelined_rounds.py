"""The next round is claimed and prepared while the last chunks of a round still wait for QuickBooks.

A batch call is the company's scarcest budget (20 to 40 a minute): each moment its window has room and no chunk is
ready to go is lost for good. With a barrier between rounds, the push's threads ran dry at every round's end — the
last chunks in flight, then a claim, the dependencies, a snapshot and a DocNumber query per chunk before the next
batch call — which cost a chaos run about six batch calls per round (measured from the sandbox's request log). Now a
round's invoice chunks are handed to the run's threads and the next round is claimed as soon as fewer chunks wait for
a thread than the client sends at once. A record is never in two rounds at once (the claim skips a record with an
unfinished row), so overlapping rounds push each invoice once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import QuickBooksClient, WriteOp, WriteResult
from batchly_pipelines.services.push.organization import PushStats
from batchly_pipelines.store.queue import QueueItem, RetryPolicy, SyncQueue
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.push import TIME_SCALE, Books

INVOICES = 90  # three rounds of one chunk each


class _RecordingQueue(SyncQueue):
    """The push's queue, noting every claim (and what it returned)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, RetryPolicy(time_scale=TIME_SCALE))
        self.claims: list[list[QueueItem]] = []
        self.claimed_again = threading.Event()

    def claim(self, worker: str, **options: Any) -> list[QueueItem]:
        items = super().claim(worker, **options)
        self.claims.append(items)
        if len(self.claims) >= 2:
            self.claimed_again.set()
        return items


def test_the_next_round_is_claimed_while_the_last_chunk_of_a_round_waits_for_quickbooks(
    engine: Engine,
    org: int,
    client: QuickBooksClient,
    push: Callable[..., PushStats],
    books: Books,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with engine.begin() as conn:
        customer = f.customer(conn, org)
        item = f.item(conn, org)
    push()  # the customer and the item: the rounds below hold invoices only
    with engine.begin() as conn:
        for number in range(INVOICES):
            f.invoice(conn, org, customer, item, doc_number=f"PIPE-{number}")
    queue = _RecordingQueue(engine)
    write_batch = client.write_batch
    before_answer: list[bool] = []  # for each invoice batch call: was the next round claimed before it left?

    def held(ops: Sequence[WriteOp], **options: Any) -> list[WriteResult]:
        if not before_answer:  # the first batch call waits (a full window) until the next round is claimed
            before_answer.append(queue.claimed_again.wait(timeout=10))
        return write_batch(ops, **options)

    monkeypatch.setattr(client, "write_batch", held)

    stats = push(claim_size=30, queue=queue, lease=timedelta(minutes=2) * TIME_SCALE)

    assert before_answer == [True]
    assert stats.actions == {"invoice.create": INVOICES}
    found = books.by_doc_number()
    assert sorted(found) == sorted(f"PIPE-{n}" for n in range(INVOICES))
    assert all(len(copies) == 1 for copies in found.values())
    claimed = [item.entity_id for items in queue.claims for item in items]
    assert len(claimed) == len(set(claimed)) == INVOICES  # no record in two rounds
