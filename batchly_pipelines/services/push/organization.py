"""The push to QuickBooks for one organisation: claim → validate → customers and items first → invoices → voids.

Work comes from the durable queue in rounds: a round claims due rows with a lease, adds the unlinked customers and
items its invoices depend on, and pushes name lists before invoices (a batch cannot reference what it creates).
Records go 30 to a batch call, up to the client's in-flight limit at once, and every chunk is checkpointed as soon
as QuickBooks answers (see :mod:`.checkpoint`). Validation failures go to the dead letter with a message naming the
record and field; they never hold up the other records. Progress (done/total, throughput, ETA) is reported through a
callback after every checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

from batchly_pipelines.quickbooks.client import QuickBooksClient, WriteFenceLost
from batchly_pipelines.quickbooks.errors import AuthError
from batchly_pipelines.quickbooks.ratelimit import SharedRateLimiter
from batchly_pipelines.quickbooks.wire import BATCH_MAX
from batchly_pipelines.rules.validation import NotPushableError, assert_pushable
from batchly_pipelines.services.push.checkpoint import (
    Checkpointer,
    Failed,
    Outcome,
    PushContext,
    Pushed,
    RecordKey,
)
from batchly_pipelines.services.push.invoices import InvoicePusher
from batchly_pipelines.services.push.name_lists import CUSTOMERS, ITEMS, NameListPusher
from batchly_pipelines.store import push_locks
from batchly_pipelines.store.connections import holds_connection
from batchly_pipelines.store.db import DATABASE_ERRORS, Connection, Engine, bounded_transaction
from batchly_pipelines.store.push_rows import load_invoice_lines, load_rows
from batchly_pipelines.store.queue import QueueItem, RetryPolicy, SyncQueue
from batchly_pipelines.store.schema import utcnow

CLAIM_SIZE = (
    1200  # queue rows per round: a QuickBooks minute of batch calls, so rounds rarely idle the budget
)
# QuickBooks time (compressed by the time scale), renewed while the run lives: a dead run's rows return within it
DEFAULT_LEASE = timedelta(minutes=2)
LINGER_POLL_SECONDS = 1.0
# a failed renewal (database unreachable) is retried this often until the lease is at risk
RENEW_RETRY_SECONDS = 1.0
FENCE_ATTEMPTS = 3  # a lease check that fails this often in a row (the database is gone) stops the push
FENCE_RETRY_SECONDS = 0.2
PREPARED_AHEAD = 2  # invoice chunks in the works per request the client may have in flight
# a push whose queue is empty waits for its retries due within this (QuickBooks time) before it ends
RETRY_WAIT = timedelta(seconds=30)
# a record that failed this often in one push (sent and refused, or waiting for a record that cannot go) is left to
# its backoff and the next run: however short the backoff (a time scale, a loaded machine), one run never burns its
# attempts into the dead letter, nor keeps claiming a record that waits for one it will not push again
FAILURES_PER_PUSH = 2


_T = TypeVar("_T")


class RealmBusy(RuntimeError):
    """Another push holds the QuickBooks company's push lock: one push per company at a time, whatever started it."""

    sentence = True  # its message is the operator's sentence (``services.fleet``)


class PushAbandoned(RuntimeError):
    """This push lost its lease (taken over, renewals failed, or it was paused past it): it stopped before writing
    again; the message says which.

    ``stats``: what it had done by then (what it wrote stays written and checkpointed)."""

    sentence = True

    def __init__(self, message: str, stats: PushStats | None = None) -> None:
        super().__init__(message)
        self.stats = stats


@dataclass(frozen=True)
class Progress:
    """Where a push stands: queue rows settled out of the total known so far, over ``elapsed_seconds`` of work (time
    spent lingering for new records left out), and the records a minute the company's request budget lets the push
    write (``budget_per_minute``, ``None``: unknown)."""

    done: int
    total: int
    elapsed_seconds: float
    budget_per_minute: float | None = None

    @property
    def per_minute(self) -> float:
        """Records settled per minute of work so far."""
        return self.done / self.elapsed_seconds * 60 if self.elapsed_seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the pace so far, or at the budget's when that is slower — a burst into an empty window
        is followed by waits for it (``None`` before the first record)."""
        if not self.done:
            return None
        rate = self.per_minute
        if self.budget_per_minute is not None and 0 < self.budget_per_minute < rate:
            rate = self.budget_per_minute
        return max(0, self.total - self.done) / rate * 60 if rate > 0 else None

    def __str__(self) -> str:
        eta = "?" if self.eta_seconds is None else f"{self.eta_seconds:.0f}s"
        budget = f" (budget {self.budget_per_minute:.0f}/min)" if self.budget_per_minute else ""
        return f"{self.done}/{self.total} records, {self.per_minute:.0f}/min{budget}, ETA {eta}"


def budget_per_minute(limiter: SharedRateLimiter | None) -> float | None:
    """Records a (real) minute the realm's learned budget lets batch writes carry: batch calls a window, each of
    :data:`BATCH_MAX` records, and no more than the window's requests allow (``None`` without a limiter)."""
    if limiter is None:
        return None
    budget = limiter.budget()
    calls = min(budget.batch_per_minute.limit, budget.per_minute.limit)
    return calls * BATCH_MAX * limiter.limits.time_scale


ProgressCallback = Callable[[Progress], None]
WaitCallback = Callable[[float, str], None]  # seconds QuickBooks' window holds the push, and why
BUDGET_READ_EVERY_SECONDS = 5.0  # the shared budget is read again for progress at most this often


@dataclass
class PushStats:
    """What a push did: actions per entity (``invoice.create`` …), failures, dead letters, API use."""

    organization_id: int
    done: int = 0
    total: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    dead: int = 0
    elapsed_seconds: float = 0.0
    active_seconds: float = 0.0  # elapsed less the time spent lingering for new records
    api: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(
        default_factory=list
    )  # chunks that failed as a whole, with why (records retry later)
    conflicts: Counter[str] = field(
        default_factory=Counter
    )  # per entity and resolution (customer.quickbooks …)

    def as_dict(self) -> dict[str, Any]:
        """Plain values for logs, metadata and JSON."""
        return {
            "organization_id": self.organization_id,
            "done": self.done,
            "total": self.total,
            "actions": dict(sorted(self.actions.items())),
            "failed": self.failed,
            "dead": self.dead,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "active_seconds": round(self.active_seconds, 3),
            "api": self.api,
            "errors": list(self.errors),
            "conflicts": dict(sorted(self.conflicts.items())),
        }


def database_unreachable(organization_id: int, error: BaseException) -> str:
    """Why a push ended when the Batchly database did not answer (``DATABASE_ERRORS``), in one sentence — the CLI's
    answer and the Dagster run's failure alike."""
    cause = getattr(error, "orig", None) or error
    lines = str(cause).strip().splitlines()
    detail = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return (
        f"push of organisation {organization_id} did not run to the end: the database did not answer ({detail}); "
        "what was pushed is recorded, the rest returns to the queue when its lease lapses — try again"
    )


def worker_name(prefix: str) -> str:
    """A lease owner unique across machines and processes (``pid`` alone repeats across containers)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}-{os.getpid()}-{socket.gethostname()}"[:64]  # unique part first


def push_organization(
    engine: Engine,
    client: QuickBooksClient,
    organization_id: int,
    *,
    worker: str,
    invoice_ids: Iterable[int] | None = None,
    progress: ProgressCallback | None = None,
    waiting: WaitCallback | None = None,
    run_id: str | None = None,
    claim_size: int = CLAIM_SIZE,
    lease: timedelta = DEFAULT_LEASE,
    queue: SyncQueue | None = None,
    linger_seconds: float = 0.0,
    lock_wait: timedelta | None = None,
) -> PushStats:
    """Push everything due for ``organization_id`` (or only ``invoice_ids`` and what they depend on).

    ``lease`` is QuickBooks time, like every wait of the client: it is compressed by the client's ``time_scale``
    (``QBO_TIME_SCALE``) here, for the CLI, the Dagster job and the benchmarks alike, and so is the queue's retry
    backoff (unless a ``queue`` with its own policy is given).

    Runs until no due row is left, then keeps watching the queue for ``linger_seconds`` (a warm run picks up records
    created meanwhile within a second instead of waiting for the next sensor tick and a new run). Raises :class:`AuthError` when the realm's connection must be re-authorised
    (after checkpointing what was done); every other failure is per record.

    One push per QuickBooks company runs at a time across every process: the realm's push lock is taken first (waiting
    up to ``lock_wait``, by default one lease, for a running push to finish, else :class:`RealmBusy`), renewed with
    the queue leases, and checked before every write to QuickBooks and in every checkpoint. A push that loses it stops
    with :class:`PushAbandoned` before writing again; the rows it held go back to the queue when their lease lapses.
    """
    config = client.config
    lease = timedelta(seconds=config.scaled(lease.total_seconds()))
    # its claims and attempt counts are bounded by the lease (a worker frozen inside one keeps no row past it)
    queue = queue or SyncQueue(engine, RetryPolicy(time_scale=config.time_scale), bound=lease)
    push = _Push(engine, client, organization_id, worker, run_id, claim_size, lease, queue)
    wanted = sorted(set(invoice_ids)) if invoice_ids is not None else None
    # a write sent just before a lease ran out may still be applied for the client's whole request time (QuickBooks
    # gives up after 120 s): nobody takes a lapsed lock over before that has passed
    grace = timedelta(seconds=config.scaled(config.connect_timeout + config.read_timeout))
    wait = lease + grace if lock_wait is None else lock_wait
    acquired = _acquire_realm(engine, client.realm_id, worker, organization_id, lease, grace, wait)
    push.held_until(acquired + lease.total_seconds())
    limiter = client.limiter if isinstance(client.limiter, SharedRateLimiter) else None
    if limiter is not None:
        limiter.on_wait = waiting
    try:
        return push.run(wanted, progress, linger_seconds)
    finally:
        client.write_fence = None
        with contextlib.suppress(Exception):  # the database is gone: the lock lapses with its lease
            push_locks.release(engine, client.realm_id, worker)


def _acquire_realm(
    engine: Engine,
    realm_id: str,
    worker: str,
    organization_id: int,
    lease: timedelta,
    grace: timedelta,
    wait: timedelta,
) -> float:
    """Take the realm's push lock; returns the monotonic instant the successful attempt was made (its lease runs
    from no earlier)."""
    deadline = time.monotonic() + wait.total_seconds()
    while True:
        asked = time.monotonic()
        try:
            holder = push_locks.acquire(engine, realm_id, worker, organization_id, lease, grace)
            unreachable = None
        except Exception as exc:  # a dropped database connection: ask again until the wait is over
            holder, unreachable = None, exc
        if holder is None and unreachable is None:
            return asked
        if time.monotonic() >= deadline:
            if holder is not None:
                raise RealmBusy(
                    f"another push of QuickBooks company {realm_id} is running (organisation "
                    f"{holder.organization_id}, worker {holder.owner}, lease until "
                    f"{holder.expires_at:%Y-%m-%d %H:%M:%S} UTC); it was not started twice — try again when that "
                    "one has finished"
                )
            raise RealmBusy(
                f"the push lock of QuickBooks company {realm_id} could not be taken: the database did not answer "
                f"({type(unreachable).__name__}); nothing was sent — try again"
            )
        time.sleep(min(LINGER_POLL_SECONDS, max(0.05, deadline - time.monotonic())))


@dataclass(eq=False)
class _Chunk:
    """Invoices one thread pushes together; it may take more of a chunk not started yet (see
    :meth:`InvoicePusher.push`), and never gives its own away once started."""

    ids: list[int]


class _Push:
    """One push of one organisation: rounds of claimed work, checkpoints, statistics and progress."""

    def __init__(
        self,
        engine: Engine,
        client: QuickBooksClient,
        organization_id: int,
        worker: str,
        run_id: str | None,
        claim_size: int,
        lease: timedelta,
        queue: SyncQueue,
    ) -> None:
        self.engine = engine
        self.client = client
        self.org = organization_id
        self.worker = worker
        self.claim_size = claim_size
        self.lease = lease
        self.queue = queue
        self.checkpointer = Checkpointer(
            engine,
            queue,
            organization_id,
            run_id,
            fence=lambda conn: self._fence_in(conn, hold=True),
            lease_left=self._lease_left,
        )
        self.realm_id = client.realm_id
        self._lease_lost = threading.Event()
        self._lost_reason: str | None = None
        # the monotonic instant the lease runs out, by what the database last confirmed (measured from before it
        # was asked, so never later than the database's own expiry; see _lease_left)
        self._held_until = 0.0
        self._held_lock = threading.Lock()
        client.write_fence = self._fence
        self.stats = PushStats(organization_id)
        self.ctx = PushContext(engine, client, organization_id, run_id, self._checkpoint)
        self.customers = NameListPusher(self.ctx, CUSTOMERS)
        self.items = NameListPusher(self.ctx, ITEMS)
        self.invoices = InvoicePusher(self.ctx)
        # every row claimed in this run, by record (a later claim of a record replaces its earlier rows: the claim
        # never hands out a record while an older row of it is unfinished, so those are settled)
        self.claimed: dict[RecordKey, list[QueueItem]] = {}
        self._round_claimed: dict[RecordKey, list[QueueItem]] = defaultdict(list)  # the round being prepared
        # invoice chunks of every round, submitted and not yet seen finished: (future, chunk, times submitted)
        self._chunks: list[tuple[Future[None], _Chunk, int]] = []
        self._queued: list[_Chunk] = []  # … of those, the ones no thread has started (under the lock)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._progress: ProgressCallback | None = None
        self._started = time.monotonic()
        self._idle = 0.0  # seconds spent lingering with nothing due
        self._limiter = client.limiter if isinstance(client.limiter, SharedRateLimiter) else None
        self._retry_wait = client.config.scaled(RETRY_WAIT.total_seconds())
        self._waited_for_retries = False  # a push waits for its own retries once
        self._failures: Counter[RecordKey] = Counter()  # failures of each record in this push
        self._spent: set[RecordKey] = set()  # … that reached FAILURES_PER_PUSH: this push claims them no more
        self._budget: tuple[float, float | None] = (-BUDGET_READ_EVERY_SECONDS, None)  # (read at, per minute)

    def run(
        self, invoice_ids: list[int] | None, progress: ProgressCallback | None, linger_seconds: float
    ) -> PushStats:
        self._progress = progress
        self._started = time.monotonic()
        if invoice_ids is not None:
            self.stats.total = len(invoice_ids)
            self.queue.expedite(self.org, "invoice", invoice_ids)
        stop_renewing = threading.Event()
        renewer = threading.Thread(
            target=self._renew_leases, args=(stop_renewing,), name="push-leases", daemon=True
        )
        renewer.start()
        # twice the client's in-flight limit: while one set of chunks is on its way, the next is prepared (rows read,
        # DocNumbers asked) and waits at the company's window, so a window that opens is used at once
        threads = PREPARED_AHEAD * self.client.config.in_flight
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="push")
        try:
            while True:
                # while invoice chunks are still on their way the next round is claimed without lingering: with
                # nothing due now, those chunks are waited for (their failures may be due again soon)
                in_flight = bool(self._chunks)
                linger = 0.0 if in_flight else linger_seconds
                batch = self._retrying(
                    partial(self._claim_or_linger, invoice_ids, linger, wait_for_retries=not in_flight)
                )
                if not batch:
                    if not in_flight:
                        break
                    self._collect(backlog=0)
                    continue
                round_invoices = self._retrying(partial(self._round, batch, counted=invoice_ids is not None))
                self._submit_invoices(round_invoices)
                # the next round is claimed once fewer chunks wait for a thread than the client may send at once, so
                # the threads never run dry at a round's end while the company's window has room
                self._collect(backlog=self.client.config.in_flight)
            self._collect(backlog=0)
        except WriteFenceLost:
            raise self._abandoned() from None
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            stop_renewing.set()
            renewer.join()
            self.stats.elapsed_seconds = time.monotonic() - self._started
            self.stats.active_seconds = self.stats.elapsed_seconds - self._idle
            self.stats.api = self.client.stats.as_dict()
        return self.stats

    def _renew_leases(self, stop: threading.Event) -> None:
        """Keep the realm lock and this worker's claimed rows leased while it runs (a third of the lease apart), so a
        long round never looks abandoned; once the worker dies its leases lapse within one lease.

        A failed renewal (database unreachable) is retried every second; when the lock was taken over, or renewals
        kept failing until the lease is at risk, the lease counts as lost and every later write is refused.
        """
        interval = self.lease.total_seconds() / 3
        renewed_at = time.monotonic()
        wait = interval
        while not stop.wait(wait):
            asked = time.monotonic()
            try:
                if not push_locks.renew(self.engine, self.realm_id, self.worker, self.lease):
                    since = time.monotonic() - renewed_at
                    self._lose(f"its renewal {since:.0f} s after the last one found {self._lock_now()}")
                    return
                self.held_until(asked + self.lease.total_seconds())
                self.queue.renew_leases(self.worker, self.lease)
                renewed_at, wait = time.monotonic(), interval
            except Exception as exc:
                failing = time.monotonic() - renewed_at
                if failing >= self.lease.total_seconds() - self._margin.total_seconds():
                    first = (str(exc).strip().splitlines() or [""])[0][:200]
                    self._lose(f"its renewals failed for {failing:.0f} s ({type(exc).__name__}: {first})")
                    return
                wait = RENEW_RETRY_SECONDS

    def _lose(self, why: str) -> None:
        """The lease counts as lost from now on (every later write is refused); the first reason is kept for the
        message."""
        with self._held_lock:
            self._lost_reason = self._lost_reason or (
                f"it lost its lease on QuickBooks company {self.realm_id}: {why}"
            )
        self._lease_lost.set()

    def _lock_now(self, conn: Connection | None = None) -> str:
        """Who holds the realm's push lock now, as a phrase (for the message of a lost lease)."""
        try:
            if conn is not None:
                found = push_locks.holder_in(conn, self.realm_id)
            else:
                found = push_locks.holder_and_live(self.engine, self.realm_id)
        except Exception as exc:  # the database is gone: say so, the lease is lost either way
            return f"no answer about the lock ({type(exc).__name__})"
        if found is None:
            return "no push lock at all"
        holder, live = found
        if holder.owner != self.worker:
            return f"worker {holder.owner} holding it since {holder.acquired_at:%H:%M:%S} UTC"
        state = "running until" if live else "run out at"
        return f"its own lease {state} {holder.expires_at:%H:%M:%S} UTC"

    def held_until(self, instant: float) -> None:
        """The database confirmed the lease until at least the monotonic ``instant``."""
        with self._held_lock:
            self._held_until = max(self._held_until, instant)

    def _lease_left(self) -> timedelta:
        """The lease left by this process's clock since the database last confirmed it — never more than the
        database's — which bounds a checkpoint's transaction. Raises :class:`WriteFenceLost` (and the lease counts as
        lost) when no more than the margin is left: a process that was frozen past its lease finds out here, before
        its first write-back, as its lease check would."""
        left = timedelta(seconds=self._held_until - time.monotonic())
        if not self._lease_lost.is_set() and left <= self._margin:
            self._lose(
                f"the database last confirmed it {(self.lease - left).total_seconds():.0f} s ago, longer than the "
                "lease less its margin (the process was paused, or starved, past it)"
            )
        if self._lease_lost.is_set():
            raise WriteFenceLost(f"the push lost its lease on QuickBooks company {self.realm_id}")
        return left

    @property
    def _margin(self) -> timedelta:
        """Lease a write must have left when it is sent, so it completes before anyone else may take over."""
        return self.lease / 4

    def _abandoned(self) -> PushAbandoned:
        why = self._lost_reason or f"it lost its lease on QuickBooks company {self.realm_id}"
        return PushAbandoned(
            f"the push of organisation {self.org} stopped before writing again: {why}; its records return to the "
            f"queue and the next push resumes them ({self.stats.done - self.stats.failed} pushed before it stopped)",
            self.stats,
        )

    def _fence(self) -> float:
        """Before every write to QuickBooks (and every claim): this worker still holds the realm, the organisation is
        still connected to it, and the lease leaves time to finish. Returns the monotonic instant the write must have
        left by (measured from before the database was asked, so no pause can stretch it)."""
        if self._lease_lost.is_set():
            raise WriteFenceLost(f"the push lost its lease on QuickBooks company {self.realm_id}")
        for attempt in range(1, FENCE_ATTEMPTS + 1):
            asked = time.monotonic()
            try:
                with bounded_transaction(self.engine, idle=self.lease) as conn:
                    left = self._fence_in(conn)
                self.held_until(asked + left.total_seconds())
                return asked + (left - self._margin).total_seconds()
            except WriteFenceLost:
                raise
            except Exception as exc:  # a dropped connection: the pool reconnects; ask again before giving up
                if attempt == FENCE_ATTEMPTS:
                    self._lost_reason = (
                        f"the database did not answer its lease check {FENCE_ATTEMPTS} times "
                        f"({type(exc).__name__}), so it could not prove it still holds QuickBooks company "
                        f"{self.realm_id}"
                    )
                    self._lease_lost.set()
                    raise WriteFenceLost(self._lost_reason) from None
                time.sleep(FENCE_RETRY_SECONDS)
        raise AssertionError("unreachable")

    def _fence_in(self, conn: Connection, *, hold: bool = False) -> timedelta:
        """In a checkpoint's transaction too: refuse unless this worker holds the realm with more than the margin
        left and the organisation is still connected to that company (not reconnected or switched meanwhile).
        ``hold`` (a checkpoint's last statement): the lock row stays locked until it commits, for at most the lease
        left (see :func:`push_locks.remaining`)."""
        left = (
            None
            if self._lease_lost.is_set()
            else push_locks.remaining(conn, self.realm_id, self.worker, hold=hold)
        )
        if left is None or left <= self._margin:
            if not self._lease_lost.is_set():
                self._lose(
                    f"its lease check found {self._lock_now(conn)}"
                    if left is None
                    else f"its lease check found {left.total_seconds():.1f} s left, no more than its margin"
                )
            raise WriteFenceLost(f"the push lost its lease on QuickBooks company {self.realm_id}")
        if not holds_connection(conn, self.org, self.realm_id):
            with self._held_lock:
                self._lost_reason = (
                    f"organisation {self.org} is no longer connected to QuickBooks company {self.realm_id} "
                    "(reconnected or switched while this push ran)"
                )
            self._lease_lost.set()
            raise WriteFenceLost(self._lost_reason)
        return left

    def _claim_or_linger(
        self, invoice_ids: list[int] | None, linger_seconds: float, *, wait_for_retries: bool
    ) -> list[QueueItem]:
        """The next batch; when none is due, keep looking (once a second) for up to ``linger_seconds`` — unless
        only chosen invoices are pushed: they are all claimed at once — and, ``wait_for_retries`` (nothing of this
        push is on its way), until its retries due within :data:`RETRY_WAIT` (QuickBooks time) come due: a record
        that failed a moment ago (a 503, an original waiting for its correction) is pushed again by this run, not
        left for the next one to start (once per push)."""
        started = time.monotonic()
        deadline = started + (linger_seconds if invoice_ids is None else 0.0)
        # the wait for retries is once per push, and a record that failed FAILURES_PER_PUSH times in it is not
        # waited for: a record that keeps failing (a customer the company refuses, rows an app transaction holds)
        # never keeps the run alive; decided at the first empty claim: the linger, or the soonest retry if later
        until: float | None = None
        while not (batch := self._claim(invoice_ids)):
            if until is None:
                retry = (
                    self._retry_due(invoice_ids) if wait_for_retries and not self._waited_for_retries else 0.0
                )
                self._waited_for_retries |= retry > deadline
                until = max(deadline, retry)
                continue  # claimed once more first: the retry may have come due while it was looked up
            if time.monotonic() >= until:
                break
            time.sleep(min(LINGER_POLL_SECONDS, max(0.0, until - time.monotonic())))
        if (
            time.monotonic() - started > LINGER_POLL_SECONDS / 2
        ):  # it lingered: idle, not work (rates leave it out)
            self._idle += time.monotonic() - started
        return batch

    def _retry_due(self, invoice_ids: list[int] | None) -> float:
        """The monotonic instant this push's soonest pending retry is due, when that is within
        :data:`RETRY_WAIT` (else 0: nothing to wait for)."""
        spent = self._spent_now()
        due = self.queue.next_retry(
            self.org,
            entity_types=["invoice"] if invoice_ids is not None else None,
            entity_ids=invoice_ids,
            excluding=spent,
        )
        if due is None:
            return 0.0
        left = (due - utcnow()).total_seconds()
        return time.monotonic() + max(0.0, left) if left <= self._retry_wait else 0.0

    def _budget_per_minute(self) -> float | None:
        """The realm's budget in records a minute, read again at most every few seconds (called under the lock)."""
        read_at, value = self._budget
        if time.monotonic() - read_at >= BUDGET_READ_EVERY_SECONDS:
            try:
                value = budget_per_minute(self._limiter)
            except Exception:  # the database is gone for a moment: progress without the budget
                value = None
            self._budget = (time.monotonic(), value)
        return value

    def _claim(self, invoice_ids: list[int] | None) -> list[QueueItem]:
        self._fence()  # a worker that lost the realm claims nothing more
        spent = self._spent_now()
        batch = self.queue.claim(
            self.worker,
            limit=self.claim_size,
            lease=self.lease,
            organization_id=self.org,
            entity_types=["invoice"] if invoice_ids is not None else None,
            entity_ids=invoice_ids,
            excluding=spent,
        )
        # a batch call costs one of the company's few a minute however much it carries: fill the round's last
        # invoice chunk with due invoices, if there are any
        short = -sum(item.entity_type == "invoice" for item in batch) % BATCH_MAX
        if batch and short and invoice_ids is None:
            batch += self.queue.claim(
                self.worker,
                limit=short,
                lease=self.lease,
                organization_id=self.org,
                entity_types=["invoice"],
                excluding=spent,
            )
        return batch

    def _retrying(self, step: Callable[[], _T]) -> _T:
        """A step of the round loop, asked again when the database dropped its connection (the pool reconnects). A
        round is safe to repeat: what it pushed already is skipped or linked by the DocNumber guard, never sent
        twice; its rows stay leased to this worker meanwhile."""
        for attempt in range(1, FENCE_ATTEMPTS + 1):
            try:
                return step()
            except DATABASE_ERRORS:
                if attempt == FENCE_ATTEMPTS:
                    raise
                time.sleep(FENCE_RETRY_SECONDS)
        raise AssertionError("unreachable")

    def _round(self, batch: list[QueueItem], *, counted: bool) -> list[int]:
        """Prepare one claimed batch: refusals, then its dependencies (customers and items, pushed now); returns its
        invoices, for :meth:`_submit_invoices` (creates after voids, chunk by chunk). ``counted``: the total is known
        (chosen invoices), else it grows with what is due. Safe to repeat (nothing of the invoices is sent yet)."""
        if not counted:
            due = self.queue.due_by_organization().get(self.org, (0, 0))[0]
            self.stats.total = max(self.stats.total, self.stats.done + len(batch) + due)
        self._round_claimed = defaultdict(list)
        refused: list[Outcome] = []
        for item in batch:
            try:
                assert_pushable(item.entity_type)
            except NotPushableError as exc:
                refused.append(Failed(item.entity_type, item.entity_id, "refuse", str(exc), retryable=False))
            self._round_claimed[(item.entity_type, item.entity_id)].append(item)
        self.claimed.update(self._round_claimed)
        self._checkpoint(refused)
        invoice_ids = self._ids("invoice")
        customer_deps, item_deps = self._dependencies(invoice_ids)
        customers = self._pushable_dependencies("customer", customer_deps, chosen=counted)
        items = self._pushable_dependencies("item", item_deps, chosen=counted)
        self._in_chunks("customer", sorted(set(self._ids("customer")) | customers), self.customers.push)
        self._in_chunks("item", sorted(set(self._ids("item")) | items), self.items.push)
        self._note_dead_letters("customer", customer_deps)  # after their push: a refusal just now counts
        self._note_dead_letters("item", item_deps)
        # invoices of other rounds that were parked while one of these was in the dead letter follow it now
        self.queue.expedite_waiting_for(
            self.org, customers=set(self._ids("customer")) | customers, items=set(self._ids("item")) | items
        )
        return invoice_ids

    def _ids(self, entity_type: str) -> list[int]:
        return sorted(entity_id for kind, entity_id in self._round_claimed if kind == entity_type)

    def _dependencies(self, invoice_ids: list[int]) -> tuple[set[int], set[int]]:
        """Customers and items that the invoices reference and QuickBooks does not have yet."""
        with self.engine.connect() as conn:
            invoices = load_rows(conn, "invoice", invoice_ids)
            lines = load_invoice_lines(conn, invoices)
            customers = load_rows(conn, "customer", {inv["customer_id"] for inv in invoices.values()})
            items = load_rows(conn, "item", {line["item_id"] for rows in lines.values() for line in rows})
        return (
            {cid for cid, row in customers.items() if row["qbo_id"] is None},
            {iid for iid, row in items.items() if row["qbo_id"] is None},
        )

    def _pushable_dependencies(self, entity_type: str, ids: set[int], *, chosen: bool) -> set[int]:
        """Those of the round's dependencies that are pushed now: their rows claimed, or queued nowhere. A
        dependency whose row waits (its backoff — unless the invoices were ``chosen``, "Sync now", which skips
        theirs too —, or left by this push after failing twice) is not sent past it, and one in the dead letter is
        not sent again: its invoices wait for the first and are parked behind the second (:meth:`_note_dead_letters`)."""
        if chosen and ids:
            self.queue.expedite(self.org, entity_type, sorted(ids))
        self._claim_dependencies(entity_type, ids)
        claimed = {i for i in ids if (entity_type, i) in self._round_claimed}
        queued = self.queue.unsettled(self.org, entity_type, ids - claimed)
        return {i for i in ids if i in claimed or i not in queued}

    def _note_dead_letters(self, entity_type: str, ids: set[int]) -> None:
        """Tell the invoice chunks which of these dependencies are in the dead letter now (and which not)."""
        rows = self.queue.unsettled(self.org, entity_type, ids)
        self.invoices.dead_lettered(
            {
                (entity_type, i): (rows[i][1] or "dead-lettered")
                if i in rows and rows[i][0] == "dead"
                else None
                for i in ids
            }
        )

    def _claim_dependencies(self, entity_type: str, ids: set[int]) -> None:
        """Lease the queue rows of dependencies too, so their push is acknowledged with the rest."""
        missing = sorted(i for i in ids if (entity_type, i) not in self._round_claimed)
        if not missing:
            return
        self._fence()
        spent = self._spent_now()
        for item in self.queue.claim(
            self.worker,
            limit=len(missing),
            lease=self.lease,
            organization_id=self.org,
            entity_types=[entity_type],
            entity_ids=missing,
            excluding=spent,
        ):
            self._round_claimed[(item.entity_type, item.entity_id)].append(item)
            self.claimed[(item.entity_type, item.entity_id)] = self._round_claimed[
                (item.entity_type, item.entity_id)
            ]

    def _in_chunks(
        self,
        entity_type: str,
        ids: Sequence[int],
        push: Callable[[Sequence[int]], list[Outcome]],
        *,
        checkpointed: bool = False,
    ) -> None:
        """Push ``ids`` 30 at a time, as many chunks at once as the client may have requests in flight.

        An error of one chunk (a 503 that outlived the client's retries, a bug) fails that chunk's records for a later
        retry with backoff (the error is their message and is listed in ``stats.errors``); the other chunks and
        rounds carry on. Only an :class:`AuthError` (once the other chunks are done) or a lost lease stops the push.
        """
        chunks = [ids[i : i + BATCH_MAX] for i in range(0, len(ids), BATCH_MAX)]
        run = self._chunk_runner(entity_type, push, checkpointed=checkpointed)
        with ThreadPoolExecutor(max_workers=self.client.config.in_flight, thread_name_prefix="push") as pool:
            errors = [future.exception() for future in [pool.submit(run, chunk) for chunk in chunks]]
        self._raise_first(errors)

    def _raise_first(self, errors: Sequence[BaseException | None]) -> None:
        """A lost lease abandons the push; else an :class:`AuthError`, else any other error of a chunk (its failure
        checkpoint itself failed: nothing more can be recorded) ends it."""
        if any(isinstance(e, WriteFenceLost) for e in errors) or self._lease_lost.is_set():
            raise self._abandoned()
        failure = next((e for e in errors if isinstance(e, AuthError)), None) or next(
            (e for e in errors if e is not None), None
        )
        if failure is not None:
            raise failure

    def _submit_invoices(self, ids: Sequence[int]) -> None:
        """Hand a round's invoices, 30 to a chunk, to the run's threads without waiting for them (see
        :meth:`_collect`): the next round is prepared while these wait for the company's window. Every chunk is
        queued before the first is submitted, so a chunk short of writes can take invoices of the others."""
        assert self._pool is not None
        chunks = [_Chunk(list(ids[i : i + BATCH_MAX])) for i in range(0, len(ids), BATCH_MAX)]
        with self._lock:
            self._queued.extend(chunks)
        for chunk in chunks:
            self._chunks.append((self._pool.submit(self._invoice_chunk, chunk), chunk, 1))

    def _invoice_chunk(self, chunk: _Chunk) -> None:
        with self._lock:  # from now on no other chunk takes invoices of this one
            if chunk in self._queued:
                self._queued.remove(chunk)
            if not chunk.ids:
                return  # other chunks took all of them
        push = partial(self.invoices.push, more=partial(self._more_invoices, chunk))
        self._chunk_runner("invoice", push, checkpointed=True)(chunk.ids)

    def _more_invoices(self, taker: _Chunk, wanted: int) -> list[int]:
        """Up to ``wanted`` invoices of the newest chunk no thread has started, moved to ``taker`` (their attempts
        counted now: they go out with it). A failure of ``taker`` as a whole then fails them with it. Only the lease
        holder takes any (as only it counts attempts: a push that lost the company would burn the retry budget of rows
        it never sends)."""
        self._fence()  # raises WriteFenceLost (lease lost or taken over): the chunk stops, nothing taken
        with self._lock:
            source = next((chunk for chunk in reversed(self._queued) if chunk.ids), None)
            if source is None:
                return []
            taken = source.ids[-wanted:]
            del source.ids[-wanted:]
            taker.ids.extend(taken)
        self.queue.count_attempts([item for i in taken for item in self.claimed.get(("invoice", i), ())])
        return taken

    def _collect(self, *, backlog: int) -> None:
        """Wait until no more than ``backlog`` invoice chunks wait for a thread (0: until every chunk is done),
        settling those that finished. A chunk whose failure could not even be recorded (the database dropped the
        connection) is sent round again, as a repeated round was; a lost lease or an :class:`AuthError` ends the
        push once the chunks running have returned."""
        assert self._pool is not None
        while True:
            still: list[tuple[Future[None], _Chunk, int]] = []
            errors: list[BaseException] = []
            for future, chunk, tries in self._chunks:
                if not future.done():
                    still.append((future, chunk, tries))
                    continue
                error = future.exception()
                if error is None:
                    continue
                if (
                    isinstance(error, DATABASE_ERRORS)
                    and tries < FENCE_ATTEMPTS
                    and not self._lease_lost.is_set()
                ):
                    time.sleep(FENCE_RETRY_SECONDS)
                    still.append((self._pool.submit(self._invoice_chunk, chunk), chunk, tries + 1))
                else:
                    errors.append(error)
            self._chunks = still
            if errors or self._lease_lost.is_set():
                with self._lock:
                    self._queued.clear()  # nothing more is taken from chunks that are cancelled now
                for future, _, _ in self._chunks:
                    future.cancel()
                wait([future for future, _, _ in self._chunks])
                self._chunks = []
                self._raise_first(errors)
            waiting = sum(1 for future, _, _ in self._chunks if not future.running() and not future.done())
            if (waiting <= backlog and backlog > 0) or not self._chunks:
                return
            wait([future for future, _, _ in self._chunks], return_when=FIRST_COMPLETED)

    def _chunk_runner(
        self,
        entity_type: str,
        push: Callable[[Sequence[int]], list[Outcome]],
        *,
        checkpointed: bool,
    ) -> Callable[[Sequence[int]], None]:
        """What one chunk's thread does: fence, count attempts, push, checkpoint (a failure fails the chunk's
        records for a retry with backoff)."""

        def run(chunk: Sequence[int]) -> None:
            if self._lease_lost.is_set():
                return  # the round is abandoned: nothing more is sent or written back
            self._fence()  # attempts are counted only by the holder, for rows it is about to send
            try:
                self.queue.count_attempts(
                    [item for i in chunk for item in self.claimed.get((entity_type, i), ())]
                )
                outcomes = push(chunk)
            except (AuthError, WriteFenceLost):
                raise
            except Exception as exc:  # a bug or an outage: this chunk retries later, the run carries on
                lines = str(exc).strip().splitlines()  # a database error carries its SQL on the next lines
                message = f"push failed: {type(exc).__name__}" + (f": {lines[0]}" if lines else "")
                with self._lock:
                    self.stats.errors.append(f"{entity_type} {', '.join(map(str, chunk))}: {message}")
                self._checkpoint([Failed(entity_type, i, "push", message, retryable=True) for i in chunk])
                return
            if not checkpointed:
                self._checkpoint(outcomes)

        return run

    def _spent_now(self) -> set[RecordKey]:
        """The records this push claims no more (``FAILURES_PER_PUSH``), as of now (chunks add to them)."""
        with self._lock:
            return set(self._spent)

    def _count_failures(self, outcomes: Sequence[Outcome]) -> list[Outcome]:
        """Count the failures of this push by record, before they are written (and due again: no claim may take one
        meanwhile); a record failing for the ``FAILURES_PER_PUSH``-th time is left to the next run, and its message
        says so (the sync log, the queue and the run's failed records)."""
        counted: list[Outcome] = []
        with self._lock:
            for outcome in outcomes:
                if isinstance(outcome, Failed) and not (outcome.retry_now or outcome.waits_here):
                    self._failures[outcome.key] += 1
                    if self._failures[outcome.key] == FAILURES_PER_PUSH and outcome.retryable:
                        self._spent.add(outcome.key)
                        outcome = replace(
                            outcome,
                            message=f"{outcome.message} (failed {FAILURES_PER_PUSH} times in this push: left to "
                            "its backoff and the next push)",
                        )
                    elif self._failures[outcome.key] >= FAILURES_PER_PUSH:
                        self._spent.add(outcome.key)
                counted.append(outcome)
        return counted

    def _checkpoint(self, outcomes: Sequence[Outcome]) -> None:
        if not outcomes:
            return
        outcomes = self._count_failures(outcomes)
        result = self.checkpointer.write(outcomes, self.claimed)
        with self._lock:
            for outcome in outcomes:
                ok = isinstance(outcome, Pushed)
                if isinstance(outcome, Failed) and outcome.retry_now:
                    continue  # not done yet, not failed: the next claim takes it
                self.stats.actions[f"{outcome.entity_type}.{outcome.action if ok else 'failed'}"] += 1
                for conflict in outcome.conflicts:
                    self.stats.conflicts[f"{conflict.entity_type}.{conflict.resolution}"] += 1
            self.stats.done += result.acked + result.retrying + result.dead
            self.stats.failed += result.retrying + result.dead
            self.stats.dead += result.dead
            self.stats.total = max(self.stats.total, self.stats.done)
            snapshot = Progress(
                self.stats.done,
                self.stats.total,
                time.monotonic() - self._started - self._idle,
                self._budget_per_minute(),
            )
            if self._progress is not None:
                self._progress(snapshot)
