"""A transient error retries the chunk, not the run (issue 14, failure 10): the other chunks are pushed and
checkpointed, the failed chunk's records back off with the error as their message, and the next push completes them
exactly once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import ClientConfig
from batchly_pipelines.quickbooks.errors import ServerError
from batchly_pipelines.services.connections import client_for_organization
from batchly_pipelines.services.push.invoices import InvoicePusher
from batchly_pipelines.services.push.name_lists import NameListPusher
from batchly_pipelines.services.push.organization import PushStats, push_organization
from batchly_pipelines.settings import Settings
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.queue import RetryPolicy, SyncQueue
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.push.test_push_resilience import IMPATIENT, _assert_exactly_once, _demo_into
from batchly_pipelines_tests.support.push import LONG_LEASE, TIME_SCALE, Books, queue_status


def _one_outage(monkeypatch: pytest.MonkeyPatch) -> list[Sequence[int]]:
    """The first invoice chunk fails as a whole (a 503 that outlived the client's retries); returns it, once it has."""
    real_push = InvoicePusher.push
    failed_once: list[Sequence[int]] = []

    def one_outage(self: InvoicePusher, ids: Sequence[int], **options: Any) -> Any:
        if not failed_once:
            failed_once.append(list(ids))
            raise ServerError("HTTP 503 from QuickBooks (retries exhausted)")
        return real_push(self, ids, **options)

    monkeypatch.setattr(InvoicePusher, "push", one_outage)
    return failed_once


def test_an_outage_in_one_chunk_fails_that_chunk_and_the_run_carries_on(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    _demo_into(engine, org, 90)
    failed_once = _one_outage(monkeypatch)
    # no exception: one chunk's outage is that chunk's problem (a long backoff, so this push does not retry it)
    stats = push(queue=SyncQueue(engine, RetryPolicy(base_delay=timedelta(hours=1))))
    [chunk] = failed_once
    assert len(stats.errors) == 1 and "ServerError" in stats.errors[0]
    assert len(books.objects("Invoice")) == 90 - len(chunk)
    q = s.sync_queue.c
    with engine.connect() as conn:
        waiting = conn.execute(
            sa.select(q.entity_id, q.status, q.last_error, q.attempts).where(
                q.entity_type == "invoice", q.status != "done"
            )
        ).all()
    assert sorted(row.entity_id for row in waiting) == sorted(chunk)
    assert all(row.status == "pending" and "503" in row.last_error and row.attempts == 1 for row in waiting)

    monkeypatch.undo()
    queue = SyncQueue(engine, IMPATIENT)
    queue.expedite(org, "invoice", chunk)  # their backoff is over
    push(queue=queue)
    assert not queue.due_by_organization()
    _assert_exactly_once(engine, books, 90)


class _SlowLookupQueue(SyncQueue):
    """A queue whose lookup of the soonest retry answers only once that retry has come due (a loaded database)."""

    def next_retry(self, *args: Any, **kwargs: Any) -> Any:
        due = super().next_retry(*args, **kwargs)
        if due is not None:
            time.sleep(max(0.0, (due - utcnow()).total_seconds()) + 0.05)
        return due


@pytest.mark.parametrize("lookup", [SyncQueue, _SlowLookupQueue], ids=["lookup", "retry-due-during-lookup"])
def test_a_retry_due_shortly_is_pushed_by_the_same_run_not_left_for_the_next(
    engine: Engine,
    org: int,
    push: Callable[..., PushStats],
    books: Books,
    monkeypatch: pytest.MonkeyPatch,
    lookup: type[SyncQueue],
) -> None:
    """The run's only chunk fails and backs off for 10 to 20 QuickBooks seconds: the push waits for it and pushes it
    before it ends, instead of ending with it pending for the next run to start (a sensor tick and a process
    later). A backoff longer than the wait is left to the next run (above). A retry that came due while the run
    looked it up ended the wait before it began (CI's loaded PostgreSQL, once): the run claims once more first."""
    _demo_into(engine, org, 30)
    failed_once = _one_outage(monkeypatch)
    backoff = RetryPolicy(base_delay=timedelta(seconds=20), time_scale=TIME_SCALE)
    stats = push(queue=lookup(engine, backoff))
    assert len(failed_once) == 1 and len(stats.errors) == 1
    assert stats.actions["invoice.create"] == 30
    q = s.sync_queue.c
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(q.status != "done")).scalar_one() == 0
    _assert_exactly_once(engine, books, 30)


def test_a_record_that_keeps_waiting_for_one_that_cannot_go_does_not_keep_the_run_alive(
    engine: Engine, settings: Settings, org: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The customers cannot be pushed (every chunk fails); the invoices wait for them without an attempt counted, so
    their backoff stays short. Each customer and invoice fails at most twice in this push (``FAILURES_PER_PUSH``),
    then is left to the next run, and the push ends: before that rule, a round on a loaded PostgreSQL outlasted the
    invoices' backoff and every claim found them due again, at any time scale. The Dagster run of
    ``test_sensor_batched`` whose company answers 500s is the case that hung."""
    _demo_into(engine, org, 30)

    def down(self: NameListPusher, ids: Sequence[int]) -> Any:
        raise ServerError("HTTP 500 from QuickBooks (retries exhausted)")

    monkeypatch.setattr(NameListPusher, "push", down)
    done: list[PushStats] = []
    scale = 10.0
    backoff = SyncQueue(
        engine, RetryPolicy(time_scale=scale)
    )  # 5 QuickBooks seconds: 0.25 to 0.5 s, then more

    def run() -> None:
        with client_for_organization(engine, settings, org, config=ClientConfig(time_scale=scale)) as client:
            done.append(
                push_organization(engine, client, org, worker="waiting", queue=backoff, lease=LONG_LEASE)
            )

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the push kept waiting for retries that settle nothing"
    [stats] = done
    assert stats.actions["invoice.create"] == 0 and stats.failed > 0


def test_one_push_sends_a_failing_record_at_most_twice_however_short_its_backoff(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every invoice chunk fails (an app transaction holds the rows, an outage); with no backoff at all each is due
    again the moment it failed. The push sends each at most twice — its attempt and one retry — and leaves the rest
    to the backoff and the next run, so one run never burns a record's attempts into the dead letter. Before, CI's
    loaded machine took longer between a chunk's failure and the next claim than the test time scale's backoff, and
    one run sent the 30 invoices 8 times and dead-lettered them."""
    _demo_into(engine, org, 30)
    sends: list[Sequence[int]] = []

    def down(self: InvoicePusher, ids: Sequence[int], **options: Any) -> Any:
        sends.append(list(ids))
        raise ServerError("HTTP 503 from QuickBooks (retries exhausted)")

    monkeypatch.setattr(InvoicePusher, "push", down)
    stats = push(queue=SyncQueue(engine, IMPATIENT))
    assert sorted(i for chunk in sends for i in chunk) == sorted(list(range(1, 31)) * 2)
    assert stats.failed == 60 and stats.dead == 0
    q = s.sync_queue.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(q.status, q.attempts).where(q.entity_type == "invoice")).all()
    assert len(rows) == 30 and all(row.status == "pending" and row.attempts == 2 for row in rows)
    [error] = {queue_status(engine, "invoice", i)[1] for i in range(1, 31)}
    assert error is not None and error.endswith(
        "(failed 2 times in this push: left to its backoff and the next push)"
    )

    monkeypatch.undo()
    push(queue=SyncQueue(engine, IMPATIENT))  # the next run pushes them
    _assert_exactly_once(engine, books, 30)
