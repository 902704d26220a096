"""Only the lease holder writes: a push that lost its realm lock stops writing, renewals survive a dropped database
connection, and one push per QuickBooks company runs at a time whatever started it (issue 14, failures 1, 3 and 7)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.quickbooks.oauth import TokenSet
from batchly_pipelines.services.push import organization as push_module
from batchly_pipelines.services.push.checkpoint import Checkpointer, CheckpointResult, Outcome
from batchly_pipelines.services.push.organization import PushAbandoned, PushStats, RealmBusy
from batchly_pipelines.store import push_locks
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.connections import ConnectionStore, unlink_organization
from batchly_pipelines.store.queue import SyncQueue
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.push.test_push_resilience import (
    IMPATIENT,
    _assert_exactly_once,
    _demo_into,
    _push_until_done,
)
from batchly_pipelines_tests.support.push import LONG_LEASE, TIME_SCALE, Books
from qbo_sandbox.admin_client import SandboxAdmin

# more chunks than the push runs at once (10): its next rounds are claimed while the first chunks are in flight,
# so only a push with chunks still to start shows that it stops mid-way
INVOICES = 450


def _expire_leases(engine: Engine) -> None:
    """What time does to a dead worker's rows and lock: its leases lapse."""
    past = utcnow() - timedelta(seconds=1)
    with engine.begin() as conn:
        conn.execute(
            sa.update(s.sync_queue)
            .where(s.sync_queue.c.status == "in_progress")
            .values(lease_expires_at=past)
        )
        conn.execute(sa.update(s.qbo_push_locks).values(expires_at=past))


def _linked(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).where(s.invoices.c.qbo_id.is_not(None))).scalar_one()
        )


def test_a_push_whose_lock_was_taken_over_stops_writing_and_the_next_push_leaves_no_duplicate(
    engine: Engine,
    org: int,
    client: QuickBooksClient,
    push: Callable[..., PushStats],
    books: Books,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _demo_into(engine, org, INVOICES)
    writes_after_takeover: list[str] = []
    stolen = False
    checkpoint = Checkpointer.write

    def steal_after_first_invoices(
        self: Checkpointer, outcomes: Sequence[Outcome], items: Any
    ) -> CheckpointResult:
        nonlocal stolen
        result = checkpoint(self, outcomes, items)
        if not stolen and any(o.entity_type == "invoice" for o in outcomes):
            with (
                engine.begin() as conn
            ):  # the lease lapsed (a pause, a dead renewal), another worker took over
                conn.execute(
                    sa.update(s.qbo_push_locks).values(
                        owner="intruder", expires_at=utcnow() + timedelta(minutes=5)
                    )
                )
            stolen = True  # set once the takeover is committed
        return result

    fence = push_module._Push._fence

    def recording_fence(self: Any) -> float:
        after_takeover = stolen  # a fence that begins after the takeover committed must refuse
        deadline = fence(self)
        if after_takeover:
            writes_after_takeover.append("sent")
        return deadline

    monkeypatch.setattr(Checkpointer, "write", steal_after_first_invoices)
    monkeypatch.setattr(push_module._Push, "_fence", recording_fence)
    with pytest.raises(PushAbandoned, match="lost its lease") as abandoned:
        push(claim_size=60)
    # the message says why: who holds the company now (found by a lease check, or by a renewal)
    assert "found worker intruder holding it since" in str(abandoned.value), abandoned.value
    assert stolen and writes_after_takeover == []  # not one write left the process after the takeover
    assert len(books.objects("Invoice")) < INVOICES
    linked_before = _linked(engine)

    monkeypatch.setattr(Checkpointer, "write", checkpoint)
    _expire_leases(engine)
    queue = SyncQueue(engine, IMPATIENT)
    for _ in range(5):
        push_module.push_organization(engine, client, org, worker="successor", queue=queue, lease=LONG_LEASE)
        if not queue.due_by_organization():
            break
    assert _linked(engine) == INVOICES > linked_before
    _assert_exactly_once(engine, books, INVOICES)


def test_lease_renewal_survives_a_dropped_database_connection(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first two renewals fail (a dropped connection) and are asked again; the push keeps its lease and carries
    on. Time is driven by the renewer itself: the first checkpoint waits until it has renewed after the failures, so
    a loaded machine only makes the test slower (the lease is a few seconds, far from what a retry takes)."""
    _demo_into(engine, org, 60)
    renew = push_locks.renew
    failures = itertools.count()
    renewed_after_failures = threading.Event()

    def flaky_renew(*args: Any, **kwargs: Any) -> bool:
        call = next(failures)
        if call < 2:
            raise sa.exc.OperationalError(
                "UPDATE qbo_push_locks", {}, Exception("server closed the connection")
            )
        held = renew(*args, **kwargs)
        if call >= 3:  # two failures, a successful retry, and a renewal on the usual schedule after it
            renewed_after_failures.set()
        return held

    monkeypatch.setattr(push_locks, "renew", flaky_renew)
    monkeypatch.setattr(push_module, "RENEW_RETRY_SECONDS", 0.05)
    slow = Checkpointer.write

    def slow_write(self: Checkpointer, outcomes: Sequence[Outcome], items: Any) -> CheckpointResult:
        assert renewed_after_failures.wait(120), "the renewer stopped after the failures"
        return slow(self, outcomes, items)

    monkeypatch.setattr(Checkpointer, "write", slow_write)
    # 9 s: renewals every 3 s; 3 s leases lapsed at a load of 18 (the renewer starved, not the retry wrong)
    stats = push(lease=timedelta(seconds=9 * TIME_SCALE), claim_size=30)
    assert next(failures) > 3, "the renewer kept renewing after the failures"
    assert stats.failed == 0
    _assert_exactly_once(engine, books, 60)


def test_a_push_that_cannot_renew_its_lease_stops_before_it_lapses(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    _demo_into(engine, org, 90)

    def dead_database(*args: Any, **kwargs: Any) -> bool:
        raise sa.exc.OperationalError("UPDATE qbo_push_locks", {}, Exception("could not connect to server"))

    monkeypatch.setattr(push_locks, "renew", dead_database)
    monkeypatch.setattr(push_module, "RENEW_RETRY_SECONDS", 0.05)
    slow = Checkpointer.write

    def slow_write(self: Checkpointer, outcomes: Sequence[Outcome], items: Any) -> CheckpointResult:
        import time

        time.sleep(0.5)
        return slow(self, outcomes, items)

    monkeypatch.setattr(Checkpointer, "write", slow_write)
    with pytest.raises(PushAbandoned):
        push(lease=timedelta(seconds=1.2 * TIME_SCALE), claim_size=30)  # 1.2 s
    assert len(books.objects("Invoice")) < 90


def test_one_push_per_company_whatever_started_it(
    engine: Engine, org: int, client: QuickBooksClient, push: Callable[..., PushStats], books: Books
) -> None:
    _demo_into(engine, org, 30)
    assert push_locks.acquire(engine, client.realm_id, "dagster-run-1", org, timedelta(minutes=2)) is None
    with pytest.raises(RealmBusy, match=f"company {client.realm_id} is running.*dagster-run-1"):
        push(lock_wait=timedelta(0))
    assert books.objects("Invoice") == [] and books.objects("Customer") == []
    push_locks.release(engine, client.realm_id, "dagster-run-1")
    stats = push(lock_wait=timedelta(0))
    assert stats.failed == 0 and len(books.objects("Invoice")) == 30
    assert push_locks.holder_and_live(engine, client.realm_id) is None  # released when the push ended


def test_a_dead_holders_lock_lapses_within_one_lease(
    engine: Engine, org: int, client: QuickBooksClient, push: Callable[..., PushStats], books: Books
) -> None:
    _demo_into(engine, org, 30)
    lease = timedelta(seconds=0.5)
    assert push_locks.acquire(engine, client.realm_id, "killed-run", org, lease) is None  # then SIGKILL
    stats = push(lock_wait=timedelta(seconds=30))  # it lapses after 0.5 s and the takeover grace (2.3 s here)
    assert stats.failed == 0 and len(books.objects("Invoice")) == 30


def test_a_push_stops_writing_back_when_its_organisation_moves_to_another_company(
    engine: Engine,
    org: int,
    client: QuickBooksClient,
    settings: Any,
    push: Callable[..., PushStats],
    books: Books,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A switch (or reconnect) while a push runs: the push must not link records to the company it left."""
    _demo_into(engine, org, 30)
    admin = SandboxAdmin(books.sandbox.base_url)
    other = admin.new_realm("The company the organisation moved to")
    checkpoint = Checkpointer.write
    switched: list[dict[str, int]] = []

    def switch_before_first_checkpoint(
        self: Checkpointer, outcomes: Sequence[Outcome], items: Any
    ) -> CheckpointResult:
        if not switched:
            switched.append(unlink_organization(engine, org))
            ConnectionStore(engine, settings.secret_key).save(
                org, other, "local", books.sandbox.base_url, TokenSet.from_response(admin.tokens(other))
            )
        return checkpoint(self, outcomes, items)

    monkeypatch.setattr(Checkpointer, "write", switch_before_first_checkpoint)
    with pytest.raises(PushAbandoned, match="no longer connected"):
        push()
    with engine.connect() as conn:
        linked = conn.execute(sa.select(sa.func.count()).select_from(s.qbo_sync_state)).scalar_one()
        with_ids = conn.execute(
            sa.select(sa.func.count()).where(s.customers.c.qbo_id.is_not(None))
        ).scalar_one()
    assert linked == 0 and with_ids == 0  # nothing of the old company is linked to the organisation
    assert ConnectionStore(engine, settings.secret_key).load(org).realm_id == other


def test_a_worker_that_lost_the_realm_claims_and_counts_nothing_more(
    engine: Engine,
    org: int,
    client: QuickBooksClient,
    push: Callable[..., PushStats],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _demo_into(engine, org, 12)
    claim = SyncQueue.claim
    rounds = itertools.count()

    def take_over_after_first_round(self: SyncQueue, *args: Any, **kwargs: Any) -> Any:
        if next(rounds) == 1:  # the second claim: the realm was taken over in between
            with engine.begin() as conn:
                conn.execute(
                    sa.update(s.qbo_push_locks).values(
                        owner="successor", expires_at=utcnow() + timedelta(minutes=5)
                    )
                )
        return claim(self, *args, **kwargs)

    monkeypatch.setattr(SyncQueue, "claim", take_over_after_first_round)
    with pytest.raises(PushAbandoned):
        push(claim_size=3)
    q = s.sync_queue.c
    with engine.connect() as conn:
        held = conn.execute(
            sa.select(sa.func.count()).where(q.status == "in_progress", q.lease_owner == "test-worker")
        ).scalar_one()
        counted_unsent = conn.execute(
            sa.select(sa.func.count()).where(q.status != "done", q.attempts > 0)
        ).scalar_one()
    assert held <= 3 and counted_unsent == 0


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_the_lock_follows_the_database_clock_not_a_skewed_process_clock(
    engine: Engine, org: int, client: QuickBooksClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert push_locks.acquire(engine, client.realm_id, "healthy-holder", org, timedelta(minutes=2)) is None
    import batchly_pipelines.store.schema as schema_module

    skewed = utcnow() + timedelta(minutes=10)  # this process believes the holder's lease ran out long ago
    monkeypatch.setattr(schema_module, "utcnow", lambda: skewed)
    monkeypatch.setattr(
        push_locks, "utcnow", lambda: skewed, raising=False
    )  # wherever a process clock is read
    holder = push_locks.acquire(engine, client.realm_id, "skewed-newcomer", org, timedelta(minutes=2))
    assert holder is not None and holder.owner == "healthy-holder"


def _drop_once(real: Callable[..., Any], failures: int = 1) -> Callable[..., Any]:
    """``real`` whose first ``failures`` calls meet a dropped database connection."""
    calls = itertools.count()

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if next(calls) < failures:
            raise sa.exc.OperationalError(
                "SELECT qbo_push_locks", {}, Exception("server closed the connection")
            )
        return real(*args, **kwargs)

    return flaky


def test_a_dropped_connection_during_a_lease_check_or_the_lock_wait_does_not_stop_the_push(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    _demo_into(engine, org, 30)
    monkeypatch.setattr(push_locks, "acquire", _drop_once(push_locks.acquire))
    monkeypatch.setattr(push_locks, "remaining", _drop_once(push_locks.remaining, failures=2))
    monkeypatch.setattr(push_module, "FENCE_RETRY_SECONDS", 0.01)
    stats = push(lock_wait=timedelta(seconds=5))  # the lease was never in doubt: one retry each, then on
    assert stats.failed == 0
    _assert_exactly_once(engine, books, 30)


def test_a_database_that_stays_away_stops_the_push_saying_so(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    _demo_into(engine, org, 30)
    monkeypatch.setattr(push_locks, "remaining", _drop_once(push_locks.remaining, failures=10**6))
    monkeypatch.setattr(push_module, "FENCE_RETRY_SECONDS", 0.01)
    with pytest.raises(PushAbandoned, match="database did not answer its lease check"):
        push()
    assert books.objects("Invoice") == [] and books.objects("Customer") == []  # nothing written unproven


@pytest.mark.parametrize("engine", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_a_push_frozen_inside_a_checkpoint_is_taken_over_within_its_lease(
    engine: Engine, org: int, client: QuickBooksClient, books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A holder stopped (SIGSTOP, a GC pause) inside a checkpoint transaction, right after it proved its lease, must
    not keep the lock row locked past that lease: the company is free for a successor once the lease ran out, and
    the frozen write-back never lands. (PostgreSQL: on SQLite a writing transaction locks the whole file, so a frozen
    writer there stops every process until it resumes — the single-machine mode.)"""
    import time

    _demo_into(engine, org, 30)
    lease = timedelta(seconds=4)  # real time; a loaded machine must not lose it by starving the renewer
    frozen = threading.Event()
    freeze = lease * 4
    write = Checkpointer.write

    def freezes_after_its_lease_check(
        self: Checkpointer, outcomes: Sequence[Outcome], items: Any
    ) -> CheckpointResult:
        check = self.fence
        assert check is not None
        creates = any(o.entity_type == "invoice" and o.action == "create" for o in outcomes)

        def fence(conn: Any) -> object:
            left = check(conn)
            if creates and not frozen.is_set():
                frozen.set()
                time.sleep(freeze.total_seconds())
                thawed.set()
            return left

        self.fence = fence
        try:
            return write(self, outcomes, items)
        finally:
            self.fence = check

    monkeypatch.setattr(Checkpointer, "write", freezes_after_its_lease_check)
    renew, thawed = push_locks.renew, threading.Event()

    def frozen_renew(*args: Any, **kwargs: Any) -> bool:  # the whole process is stopped, its renewer too
        if frozen.is_set():
            thawed.wait(freeze.total_seconds())
        return renew(*args, **kwargs)

    monkeypatch.setattr(push_locks, "renew", frozen_renew)
    outcome: list[BaseException | PushStats] = []

    def holder() -> None:
        try:
            outcome.append(
                push_module.push_organization(
                    engine, client, org, worker="frozen", claim_size=30, lease=lease * TIME_SCALE
                )
            )
        except BaseException as exc:  # the test reads it
            outcome.append(exc)

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    assert frozen.wait(30), "the push never reached an invoice checkpoint"
    froze_at = time.monotonic()
    while push_locks.acquire(engine, client.realm_id, "successor", org, lease) is not None:
        assert time.monotonic() - froze_at < freeze.total_seconds(), "the frozen holder kept the company"
        time.sleep(0.05)
    taken_after = time.monotonic() - froze_at
    thread.join(30)

    # within its lease (the lock row was free once the lease it had left ran out), not when the holder resumed
    assert taken_after < 2 * lease.total_seconds() < freeze.total_seconds(), taken_after
    assert outcome and isinstance(outcome[0], PushAbandoned), outcome
    assert (
        _linked(engine) == 0
    )  # the frozen chunk's write-back was rolled back, not committed after the takeover


def test_a_connection_dropped_in_a_rounds_reads_or_attempt_counts_retries_it_not_the_run(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chaos benchmark's ``pg_terminate_backend`` hit a racing ``batchly-sync push`` in the round's dependency
    read (``load_invoice_lines``) and in ``count_attempts``: the push died with a traceback. A dropped connection
    there is retried like one in the lease check."""
    _demo_into(engine, org, 60)
    monkeypatch.setattr(push_module, "load_invoice_lines", _drop_once(push_module.load_invoice_lines))
    monkeypatch.setattr(SyncQueue, "count_attempts", _drop_once(SyncQueue.count_attempts))
    monkeypatch.setattr(push_module, "FENCE_RETRY_SECONDS", 0.01)

    runs = [push()]
    runs += _push_until_done(push, engine)  # rows of a chunk whose attempt count failed back off a moment

    _assert_exactly_once(engine, books, 60)
    assert not any(run.dead for run in runs)
