"""A worker frozen (SIGSTOP, a pause) in the middle of a push transaction keeps no row past its bound (issue 14).

The chaos benchmark's seed 2 stood still for 17 minutes: the run it had SIGSTOPped sat idle in transaction after a
checkpoint's ``UPDATE invoices SET qbo_id …`` and inside a rate-ledger admission, and the benchmark's own app-side
edit, the other workers' acknowledgements and every ledger admission waited on its locks. Every push transaction is
bounded on PostgreSQL from its first statement (``store.db.bound_transaction``); on SQLite a writing transaction locks
the whole file, so a frozen writer there stops everyone — the single-machine mode — and these tests are PostgreSQL's.
A frozen thread stands in for the stopped process: it blocks with its transaction open, and so does its lease renewer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.services.push import organization as push_module
from batchly_pipelines.services.push.organization import PushAbandoned, PushStats
from batchly_pipelines.store import push_locks
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.db import DATABASE_ERRORS
from batchly_pipelines.store.rate_limits import DatabaseRateLedger, RateRequest
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.push.test_push_fencing import _expire_leases, _linked
from batchly_pipelines_tests.push.test_push_resilience import (
    _assert_exactly_once,
    _demo_into,
    _push_until_done,
)
from batchly_pipelines_tests.support.push import TIME_SCALE, Books

pytestmark = pytest.mark.parametrize(
    "engine", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)

LEASE = timedelta(seconds=4)  # real time: the bound under test
FROZEN_FOR_AT_MOST = 60.0  # a frozen thread resumes by itself after this (the test failed by then)


def _waits_for_rows(engine: Engine, bound: timedelta, statement: sa.Executable) -> None:
    """The app's write of rows a frozen worker holds: it must get them within ``bound`` — waiting longer fails it."""
    with engine.begin() as conn:
        conn.execute(sa.text(f"SET LOCAL lock_timeout = '{int(bound.total_seconds() * 1000)}ms'"))
        conn.execute(statement)


@contextmanager
def _stopped_after(
    engine: Engine, statement: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[threading.Event, threading.Event]]:
    """``(frozen, resume)``: the push's first thread to run a statement starting with ``statement`` stops right after
    it, its transaction open (SIGSTOP), and from then on so does its lease renewer, until ``resume``."""
    frozen, resume = threading.Event(), threading.Event()
    main = threading.main_thread()

    def stop(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        if threading.current_thread() is not main and sql.startswith(statement) and not frozen.is_set():
            frozen.set()
            resume.wait(FROZEN_FOR_AT_MOST)

    renew = push_locks.renew

    def stopped_renew(*args: Any, **kwargs: Any) -> bool:
        if frozen.is_set():
            resume.wait(FROZEN_FOR_AT_MOST)
        return renew(*args, **kwargs)

    monkeypatch.setattr(push_locks, "renew", stopped_renew)
    sa.event.listen(engine, "after_cursor_execute", stop)
    try:
        yield frozen, resume
    finally:
        resume.set()
        sa.event.remove(engine, "after_cursor_execute", stop)


@pytest.mark.parametrize(
    ("statement", "app_write"),
    [
        pytest.param(  # a checkpoint's write-back: the invoice rows it updated stay locked
            "UPDATE invoices SET qbo_id",
            lambda org: (
                sa.update(s.invoices).where(s.invoices.c.organization_id == org).values(updated_at=utcnow())
            ),
            id="write-back",
        ),
        pytest.param(  # the acknowledgement's dead-row query (the seed-2 run), after the customers' write-backs
            "SELECT sync_queue.id, sync_queue.entity_id, sync_queue.last_error",
            lambda org: (
                sa.update(s.customers).where(s.customers.c.organization_id == org).values(updated_at=utcnow())
            ),
            id="acknowledgement",
        ),
        pytest.param(  # a claim: the app's next edit enqueues through the outbox, which needs the claimed rows
            "UPDATE sync_queue SET status",
            lambda org: (
                sa.update(s.customers)
                .where(s.customers.c.organization_id == org)
                .values(notes="edited by the app")
            ),
            id="claim",
        ),
    ],
)
def test_a_push_frozen_inside_a_transaction_frees_its_rows_within_its_lease_and_never_writes_them(
    engine: Engine,
    org: int,
    client: QuickBooksClient,
    books: Books,
    push: Callable[..., PushStats],
    monkeypatch: pytest.MonkeyPatch,
    statement: str,
    app_write: Callable[[int], sa.Executable],
) -> None:
    _demo_into(engine, org, 30)
    outcome: list[BaseException | PushStats] = []

    def holder() -> None:
        try:
            outcome.append(
                push_module.push_organization(
                    engine, client, org, worker="frozen", claim_size=60, lease=LEASE * TIME_SCALE
                )
            )
        except BaseException as exc:  # the test reads it
            outcome.append(exc)

    with _stopped_after(engine, statement, monkeypatch) as (frozen, resume):
        thread = threading.Thread(target=holder, daemon=True)
        thread.start()
        assert frozen.wait(60), f"the push never ran {statement}"
        # the app's write proceeds within the frozen holder's lease (before: it waited until the holder resumed)
        _waits_for_rows(engine, LEASE * 3, app_write(org))
        while (lock := push_locks.holder_and_live(engine, client.realm_id)) is not None and lock[1]:
            threading.Event().wait(0.05)  # stopped past its lease, as under SIGSTOP
        resume.set()
        thread.join(60)

    assert outcome and isinstance(outcome[0], PushAbandoned), outcome  # a sentence, not a traceback
    assert _linked(engine) == 0  # the frozen transaction was rolled back: none of its write-backs landed
    _expire_leases(engine)
    _push_until_done(push, engine)
    _assert_exactly_once(engine, books, 30)  # what QuickBooks had created was linked, never created again


def test_a_process_frozen_inside_a_rate_ledger_admission_holds_the_realm_for_seconds_and_logs_nothing(
    engine: Engine,
) -> None:
    realm = "frozen-admission"
    frozen, resume = threading.Event(), threading.Event()
    ledger, other = DatabaseRateLedger(engine, realm), DatabaseRateLedger(engine, realm)

    def stuck(
        now: float, paused_until: float, budget: Any, requests: Sequence[RateRequest]
    ) -> tuple[float, Any]:
        frozen.set()  # the realm row is locked (FOR UPDATE) by this admission's open transaction
        resume.wait(FROZEN_FOR_AT_MOST / 2)
        return 0.0, budget

    def admits(
        now: float, paused_until: float, budget: Any, requests: Sequence[RateRequest]
    ) -> tuple[float, Any]:
        return 0.0, budget

    outcome: list[BaseException | int | float] = []

    def frozen_admission() -> None:
        try:
            outcome.append(ledger.admit(True, stuck, forget_after=60.0, lease_seconds=180.0))
        except BaseException as exc:  # the test reads it
            outcome.append(exc)

    thread = threading.Thread(target=frozen_admission, daemon=True)
    thread.start()
    assert frozen.wait(10)
    admitted = other.admit(
        False, admits, forget_after=60.0, lease_seconds=180.0
    )  # before: waited for the resume
    admitted_while_frozen = thread.is_alive()
    resume.set()
    thread.join(30)

    assert admitted_while_frozen and isinstance(admitted, int)
    assert outcome and isinstance(outcome[0], DATABASE_ERRORS), (
        outcome
    )  # its session was ended: it logged nothing
    with engine.connect() as conn:
        logged = conn.execute(
            sa.select(s.qbo_rate_requests.c.id, s.qbo_rate_requests.c.is_batch).where(
                s.qbo_rate_requests.c.realm_id == realm
            )
        ).all()
    assert [tuple(row) for row in logged] == [(admitted, False)]


def test_a_checkpoint_that_would_wait_past_its_lease_for_the_apps_rows_retries_the_chunk_instead(
    engine: Engine, org: int, client: QuickBooksClient, books: Books, push: Callable[..., PushStats]
) -> None:
    """The waiting side: an app transaction holds the invoices' rows (a long edit, a stuck session) while the push
    writes back its creates. The write-back waits at most the lease it has left, then its chunk is failed for a retry
    (nothing dead, no invoice marked as an error) and the push ends; once the app commits, the next push links what
    QuickBooks already holds."""
    _demo_into(engine, org, 30)
    outcome: list[BaseException | PushStats] = []

    def pusher() -> None:
        try:
            outcome.append(
                push_module.push_organization(
                    engine, client, org, worker="waiting", claim_size=60, lease=LEASE * TIME_SCALE
                )
            )
        except BaseException as exc:  # the test reads it
            outcome.append(exc)

    app = engine.connect()
    try:
        app.execute(
            sa.update(s.invoices).where(s.invoices.c.organization_id == org).values(updated_at=utcnow())
        )  # uncommitted: every invoice row is locked by the app
        thread = threading.Thread(target=pusher, daemon=True)
        thread.start()
        thread.join(120)
        ended_while_the_app_held_the_rows = not thread.is_alive()
        app.commit()
    finally:
        app.close()
    thread.join(120)

    assert ended_while_the_app_held_the_rows  # before: the write-back waited for as long as the app did
    [stats] = outcome
    assert isinstance(stats, PushStats) and stats.failed >= 30 and stats.dead == 0, outcome
    assert any("lock timeout" in error for error in stats.errors), stats.errors
    with engine.connect() as conn:
        statuses = set(conn.execute(sa.select(s.invoices.c.sync_status)).scalars())
        dead = conn.execute(sa.select(sa.func.count()).where(s.sync_queue.c.status == "dead")).scalar_one()
    assert "error" not in statuses and dead == 0  # no false error
    _expire_leases(engine)
    with engine.begin() as conn:  # their backoff has passed
        conn.execute(
            sa.update(s.sync_queue)
            .where(s.sync_queue.c.status == "pending")
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )
    _push_until_done(push, engine)
    _assert_exactly_once(engine, books, 30)


def test_a_finished_request_leaves_its_in_flight_slot_even_when_the_database_dropped_the_connection(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chaos run's database drops left the answered requests of that moment in flight in the ledger — holding
    their in-flight slots and their places in every window for a whole lease — because their ``finish`` failed
    once. The ledger asks again (the pool reconnects); a drop that outlasts its attempts still reaches the caller."""
    from batchly_pipelines.store import rate_limits

    realm = "dropped-finish"
    ledger = DatabaseRateLedger(engine, realm)

    def admits(
        now: float, paused_until: float, budget: Any, requests: Sequence[RateRequest]
    ) -> tuple[float, Any]:
        return 0.0, budget

    first, second = (ledger.admit(True, admits, forget_after=60.0, lease_seconds=180.0) for _ in range(2))
    assert isinstance(first, int) and isinstance(second, int)
    real = rate_limits.bounded_transaction
    drops = [1]

    @contextmanager
    def dropping(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with real(*args, **kwargs) as conn:
            if drops[0]:
                drops[0] -= 1
                raise sa.exc.OperationalError("UPDATE qbo_rate_requests", None, Exception("server closed"))
            yield conn

    monkeypatch.setattr(rate_limits, "bounded_transaction", dropping)
    ledger.finish(first, sent_at=123.0)
    drops[0] = rate_limits.LEDGER_ATTEMPTS
    with pytest.raises(DATABASE_ERRORS):
        ledger.finish(second)
    with engine.connect() as conn:
        rows = dict(
            conn.execute(
                sa.select(s.qbo_rate_requests.c.id, s.qbo_rate_requests.c.in_flight_until).where(
                    s.qbo_rate_requests.c.realm_id == realm
                )
            ).all()
        )
    assert rows[first] is None  # answered: out of the in-flight slots
    assert rows[second] is not None  # never recorded: in flight until its lease, as before
