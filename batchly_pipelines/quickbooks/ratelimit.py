"""Per-realm QuickBooks limits shared by every thread and process that talks to the realm, learned from its 429s.

Intuit documents 500 requests per minute (batch calls included), 10 per second, 10 in flight and 40 batch calls per
minute per realm; a company may take less (some limits are shared with other apps, sandboxes differ). A
:class:`SharedRateLimiter` admits each request against the realm's *ledger*, a record of its requests and of its
learned budget that every process sees (``store.rate_limits.DatabaseRateLedger`` keeps both in the Batchly database,
so the limiter behaves the same on SQLite and PostgreSQL and needs no other infrastructure):

- every admission runs under the ledger's per-realm lock, so two processes never both take the last slot; the ledger
  also carries a pause: after a 429 every process holds off until then;
- a request holds an in-flight slot while it is in flight — until its lease ends, one lease of QuickBooks time
  compressed like every window, so a process that died mid-request frees its slots within one lease — and counts as
  "now" in every window. When its answer arrives its time becomes that moment (the server admitted it before it
  answered) — but, when the caller said when it was sent (:meth:`SharedRateLimiter.sending`, right before the bytes
  leave: the client does for every request, after its write fence), no later than ``arrival_bound_seconds`` after
  the send: the server counted it on arrival, and a slow
  answer (a batch under load) or one a frozen process read only when it resumed (SIGSTOP) kept it in the windows,
  and in what the realm seems to serve, long after the server let it go. A request that failed without being sent
  (its write fence refused, after a freeze too) leaves the ledger: QuickBooks never counted it.

**The learned budget** (:class:`RealmBudget`: additive increase, multiplicative decrease, per realm, persisted in the
ledger). A realm starts at Intuit's numbers. The per-minute and the batch windows each keep a *limit* (admitted at
full concurrency), a *ceiling* and what the realm *serves* (the most it answered in one window, never more than it
took before its last 429); the in-flight budget is one number.

- A 429 halves the limit it hit, never to more than the realm had just taken, and sets the ceiling there — unless
  429s are rare (none in the window before): then the limit backs off only to what the realm answered in the
  window that refused it, or to the most it has served in a window since its last 429 when that is more (calls
  still in flight are not answered yet): a company serving 30 of 40 batch calls is learned at 30, not 20.
  QuickBooks does not say which limit that was: it is the window the request took to a level the realm had
  not served (the nearest its documented value, if both), else the fullest window if one held a fifth of its
  documented value, else the in-flight budget. A 429 of a request sent before the limiter reacted to an earlier one
  belongs to that one; the refused request leaves the windows (QuickBooks did not count it).
- Above its limit a window admits one *probe* at a time, while its ceiling is higher: a probe the realm answers
  raises the limit; a refused probe halves the ceiling and keeps the limit (the realm had just served that much;
  halving it would waste half a window for nothing). Requests do not reach QuickBooks in the order they were
  admitted, so a 429 while a probe is pending counts as the probe's.
- Batch calls ramp up carefully: past a fifth of the documented budget a window holds at most two calls more than
  the realm serves, so discovering a lower batch budget costs about two 429s (at Intuit's latencies the ramp is
  still faster than the budget; the per-minute window keeps full concurrency, which pulls need).
- Each *success window* (a documented minute without a 429) adds to every ceiling half the way back to what the
  realm serves, and at least a fortieth of the documented value (one request or more), and one request to the
  in-flight budget, up to Intuit's numbers.

A company that takes half the documented batch calls costs one or two 429s to learn, then one refused probe every
six windows or so, and the limit stays where the company serves. The per-second limit stays at Intuit's number (its
window is too short to learn from).

Windows are compressed by ``time_scale`` exactly like the sandbox's ``--time-scale``, and stretched by a small safety
margin — 1 % plus 20 ms, for the jitter between a request leaving and the server counting it — in case the server's
bookkeeping differs slightly from ours (Intuit does not document its algorithm).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from batchly_pipelines.quickbooks.errors import ThrottledError

MINUTE = 60.0
SECOND = 1.0
LEARNED_WINDOWS = ("per_minute", "batch_per_minute")
GROWTH_PER_WINDOW = 1 / 40  # of the documented value (at least 1) added to a ceiling per success window
PLAUSIBLE_SHARE = (
    0.2  # below this share of its documented value, a window the realm served did not cause a 429
)
UNSERVED_BATCHES = 2  # batch calls allowed in flight beyond the most the realm has served in a window
WAIT_NOTICE_SECONDS = (
    5.0  # a wait for a window at least this long (QuickBooks time) is announced to ``on_wait``
)


@dataclass(frozen=True)
class RateLimits:
    """Per-realm limits (Intuit's documented values by default) and the time scale that compresses their windows."""

    per_minute: int = 500
    per_second: int = 10
    concurrent: int = 10
    batch_per_minute: int = 40
    time_scale: float = 1.0
    window_margin: float = 0.01  # windows are this fraction longer than the server's…
    window_slack_seconds: float = 0.02  # …plus this (real seconds: jitter on the way does not scale)
    # a request sent (``SharedRateLimiter.sending``) reaches the server within this (real seconds): it counts from
    # its answer, or from this long after its send when the answer is read later than that (a slow batch, a process
    # frozen with the answer unread) — never from before the server may have counted it. 0.3 s covers a new TLS
    # connection across an ocean (two round trips, then the request); 1 s cost a chaos run's batch calls about
    # 0.2 s of every 12 s slot at time scale 5 (answers took 0.2 s on average, up to 7 s on a loaded machine), and
    # a request that does arrive later is refused (429), not counted, and teaches the budget like any other
    arrival_bound_seconds: float = 0.3
    lease_seconds: float = 180.0  # a dead process's in-flight slot frees after this (QuickBooks time: scaled)
    poll_seconds: float = 0.005  # how often to look again when a request in flight is what blocks

    def span(self, seconds: float) -> float:
        """A documented window length as this limiter measures it: scaled, plus the safety margin."""
        return self.scaled(seconds) * (1 + self.window_margin) + self.window_slack_seconds

    def scaled(self, seconds: float) -> float:
        """A documented duration compressed by the time scale."""
        return seconds / self.time_scale


@dataclass(frozen=True)
class LearnedWindow:
    """One learned window: ``limit`` requests admitted freely, one probe beyond them while ``ceiling`` is higher, and
    the most the realm has ``served`` (answered) in one window — never more than it took before its last 429."""

    limit: int
    ceiling: float
    served: int = 0
    probe_at: float = 0.0  # when the latest probe was admitted, until it proved the realm serves one more

    @classmethod
    def documented(cls, value: int) -> LearnedWindow:
        """Nothing learned yet: Intuit's number."""
        return cls(value, float(value))

    @property
    def cap(self) -> int:
        """How many requests the window may hold: the limit, plus one probe while the ceiling allows it."""
        return self.limit + 1 if math.floor(self.ceiling) > self.limit else self.limit


@dataclass(frozen=True)
class Admission:
    """What a request found when it was admitted (itself included): how a 429 for it is judged."""

    request_id: int
    admitted_at: float
    batch: bool
    per_minute: int  # requests in the minute window
    batch_per_minute: int  # batch calls in the minute window
    in_flight: int
    probed: frozenset[str]  # the windows it entered as a probe, beyond their limit


@dataclass(frozen=True)
class RealmBudget:
    """What one realm has been found to take (times in ``time.time()`` seconds).

    ``event_at``: when the limiter last reacted to a 429 (the 429s of requests admitted before then belong to that
    reaction); ``adjusted_at``: where the current success window started.
    """

    per_minute: LearnedWindow
    batch_per_minute: LearnedWindow
    concurrent: int
    event_at: float = 0.0
    adjusted_at: float = 0.0

    @classmethod
    def documented(cls, limits: RateLimits) -> RealmBudget:
        """A realm nothing was learned about: Intuit's numbers."""
        return cls(
            LearnedWindow.documented(limits.per_minute),
            LearnedWindow.documented(limits.batch_per_minute),
            limits.concurrent,
        )

    @classmethod
    def load(cls, state: Mapping[str, Any] | None, limits: RateLimits) -> RealmBudget:
        """A stored budget (``None``: nothing learned yet), never above the documented ``limits``."""
        if not state:
            return cls.documented(limits)

        def window(name: str) -> LearnedWindow:
            top, stored = getattr(limits, name), state.get(name) or {}
            return LearnedWindow(
                min(top, int(stored.get("limit", top))),
                min(float(top), float(stored.get("ceiling", top))),
                min(top, int(stored.get("served", 0))),
                float(stored.get("probe_at", 0.0)),
            )

        return cls(
            window("per_minute"),
            window("batch_per_minute"),
            min(limits.concurrent, int(state.get("concurrent", limits.concurrent))),
            float(state.get("event_at", 0.0)),
            float(state.get("adjusted_at", 0.0)),
        )

    def dump(self) -> dict[str, Any]:
        """Plain values for the ledger to store."""
        return asdict(self)

    def grown(self, now: float, window: float, limits: RateLimits) -> RealmBudget:
        """The budget after the success windows (``window`` seconds each) since the last adjustment."""
        if self.adjusted_at <= 0:
            return replace(self, adjusted_at=now)  # the first window starts now
        windows = math.floor((now - self.adjusted_at) / window)
        if windows <= 0:
            return self

        def grow(learned: LearnedWindow, top: int) -> LearnedWindow:
            step, ceiling = max(1.0, top * GROWTH_PER_WINDOW), learned.ceiling
            for _ in range(min(windows, 2 * top)):  # beyond 2 x top windows the ceiling is at the top anyway
                ceiling = min(float(top), ceiling + max(step, (learned.served - ceiling) / 2))
            return replace(learned, ceiling=ceiling)

        return replace(
            self,
            per_minute=grow(self.per_minute, limits.per_minute),
            batch_per_minute=grow(self.batch_per_minute, limits.batch_per_minute),
            concurrent=min(limits.concurrent, self.concurrent + windows),
            adjusted_at=self.adjusted_at + windows * window,
        )

    def observed(self, served: Mapping[str, int]) -> RealmBudget:
        """Raise each window's limit to what the realm answered in it since the last 429 (up to the ceiling)."""
        changes = {}
        for name in LEARNED_WINDOWS:
            learned, count = getattr(self, name), served.get(name, 0)
            limit = max(learned.limit, min(count, math.floor(learned.ceiling)))
            best = max(learned.served, count)
            if (limit, best) != (learned.limit, learned.served):
                probe_at = 0.0 if limit > learned.limit else learned.probe_at  # a probe got through
                changes[name] = replace(learned, limit=limit, served=best, probe_at=probe_at)
        return replace(self, **changes) if changes else self

    def throttled(
        self, admission: Admission, now: float, limits: RateLimits, answered: Mapping[str, int] | None = None
    ) -> RealmBudget:
        """The budget after the realm answered ``admission``'s request 429; ``answered`` counts the answered
        requests each window holds now (what the realm just took, whatever order the requests reached it in)."""
        if admission.admitted_at <= self.event_at:
            return self  # sent before the limiter reacted to an earlier 429: part of that one
        answered = answered or {}

        def took(name: str) -> int:
            return max(1, getattr(admission, name) - 1, answered.get(name, 0))

        windows = [
            name
            for name in LEARNED_WINDOWS
            if getattr(limits, name) > 0 and (admission.batch or name != "batch_per_minute")
        ]
        # A probe sent since the last 429 may have reached QuickBooks before this request did (requests do not
        # arrive in the order they were admitted): then the refusal is the probe's, whichever request got it.
        probed = [
            name
            for name in windows
            if name in admission.probed or getattr(self, name).probe_at > max(self.event_at, 0.0)
        ]
        changes: dict[str, Any] = {}
        for name in probed:
            learned = getattr(self, name)
            changes[name] = LearnedWindow(
                min(learned.limit, took(name)), max(1.0, learned.ceiling / 2), min(learned.served, took(name))
            )
        if not probed:
            blamed = self._blame(admission, limits)
            if blamed == "concurrent":
                changes[blamed] = max(1, min(self.concurrent // 2, admission.in_flight - 1))
            else:
                learned = getattr(self, blamed)
                limit = min(max(1, learned.limit // 2), took(blamed))
                if now - self.event_at > limits.span(MINUTE):
                    # rare: back off to what the realm just answered, or to the most it has served in a window
                    # since its last 429 when more (calls still in flight when the 429 came were taken too; calls
                    # admitted but never sent were not, so the admission's count says nothing)
                    limit = max(limit, min(learned.limit - 1, max(answered.get(blamed, 0), learned.served)))
                changes[blamed] = LearnedWindow(limit, float(limit), min(learned.served, took(blamed)))
        return replace(self, **changes, event_at=now, adjusted_at=now)

    def _blame(self, admission: Admission, limits: RateLimits) -> str:
        """The limit a 429 outside any probe most likely hit (the server does not say)."""
        names = [
            name
            for name in LEARNED_WINDOWS
            if getattr(limits, name) > 0 and (admission.batch or name != "batch_per_minute")
        ]

        def share(name: str) -> float:
            return float(getattr(admission, name)) / getattr(limits, name)

        new_highs = [name for name in names if getattr(admission, name) > getattr(self, name).served]
        plausible = [name for name in names if share(name) >= PLAUSIBLE_SHARE]
        if new_highs or plausible:
            return max(new_highs or plausible, key=share)
        if (limits.concurrent > 0 and admission.in_flight >= 2) or not names:
            return "concurrent"
        return max(names, key=share)


class LoggedRequest(Protocol):
    """One request in a realm's ledger (times in ``time.time()`` seconds).

    ``admitted_at`` is when it was admitted; ``sent_at`` is when it was sent, or when its answer arrived (while in flight: when it was
    admitted); ``in_flight_until`` is when its in-flight slot lapses, ``None`` once answered.
    """

    @property
    def admitted_at(self) -> float: ...

    @property
    def sent_at(self) -> float: ...

    @property
    def is_batch(self) -> bool: ...

    @property
    def in_flight_until(self) -> float | None: ...


# (now, paused_until, the realm's budget as stored (None: nothing learned), its logged requests)
#   -> (seconds to wait before a new request may go (0: now), the budget to store)
AdmissionDecision = Callable[
    [float, float, Mapping[str, Any] | None, Sequence[LoggedRequest]], tuple[float, Mapping[str, Any]]
]
# (now, the realm's budget as stored, its logged requests) -> the budget to store
BudgetLesson = Callable[[float, Mapping[str, Any] | None, Sequence[LoggedRequest]], Mapping[str, Any]]


class RateLedger(Protocol):
    """The shared record of one realm's requests and budget (``store.rate_limits.DatabaseRateLedger``)."""

    def admit(
        self, batch: bool, decide: AdmissionDecision, *, forget_after: float, lease_seconds: float
    ) -> int | float:
        """Under the realm's lock: forget answered requests older than ``forget_after`` seconds, then ask ``decide``
        and store the budget it returns.

        When it answers 0, log a new in-flight request (its slot lapses after ``lease_seconds``) and return its id
        (an ``int``); otherwise return the wait (a ``float``) without logging anything.
        """
        ...

    def finish(self, request_id: int, sent_at: float | None = None) -> None:
        """The request's answer arrived: it leaves the in-flight slots and its time becomes ``sent_at`` (when it was
        sent, ``time.time()`` seconds), or now when that is not known."""
        ...

    def withdraw(self, request_id: int) -> None:
        """The request was never sent: it leaves the ledger (its in-flight slot and every window)."""
        ...

    def pause(self, until: float) -> None:
        """Hold every request of the realm until ``until`` (``time.time()`` seconds); never shortens a pause."""
        ...

    def refused(self, request_id: int, learn: BudgetLesson) -> None:
        """The request was answered 429: under the realm's lock it leaves the ledger (the server did not count it),
        then ``learn`` gets the realm's remaining requests and the budget it returns is stored."""
        ...

    def budget(self) -> Mapping[str, Any] | None:
        """The realm's budget as stored (``None``: nothing learned yet)."""
        ...


class SharedRateLimiter:
    """Admission to one realm's request budget, shared by everyone who uses the same ledger.

    Use ``with limiter.slot(batch=…) as waited:`` around each HTTP request (raising :class:`ThrottledError` inside
    it on a 429); ``waited`` is how long the call had to wait for a slot. :meth:`pause` makes every process hold off.
    ``on_wait`` (seconds, why), when set, hears of every wait of :data:`WAIT_NOTICE_SECONDS` or more before it starts
    and of every pause, so whoever runs the requests can say when they resume.
    """

    def __init__(self, ledger: RateLedger, limits: RateLimits | None = None) -> None:
        self.ledger = ledger
        self.limits = limits or RateLimits()
        self.on_wait: Callable[[float, str], None] | None = None
        # Threads of one process queue here first: cheap, and keeps SQLite's single writer lock uncontended.
        # Batch calls and other requests queue apart: threads waiting for the batch window never hold up the reads
        # that prepare the next batch (the realm's in-flight budget still caps both together).
        self._local_slots = {
            batch: threading.BoundedSemaphore(self.limits.concurrent or 1_000_000) for batch in (False, True)
        }
        self._admission = threading.Lock()
        self._thread = threading.local()  # the calling thread's slot: when its request was sent

    @contextmanager
    def slot(self, batch: bool = False) -> Iterator[float]:
        """Hold one in-flight slot and one place in each window for the duration of a request.

        A :class:`ThrottledError` (a 429) raised inside teaches the realm's budget: the request leaves the windows
        and the limit it hit shrinks, for every process, before this one admits anything else. Mark the moment the
        request leaves with :meth:`sending`: a request that raises before it was marked is taken as never sent and
        leaves the windows too.
        """
        started = time.monotonic()
        with self._local_slots[batch]:
            admission = self._admit(batch)
            refused = failed = False
            sends: list[float] = []
            outer = getattr(self._thread, "sends", None)
            self._thread.sends = sends
            try:
                yield time.monotonic() - started
            except ThrottledError:
                refused = True
                raise
            except BaseException:
                failed = True
                raise
            finally:
                self._thread.sends = outer
                if refused:
                    self._learn(admission)
                elif (
                    failed and not sends
                ):  # stopped before it left (a write its fence refused): never counted
                    self.ledger.withdraw(admission.request_id)
                else:
                    self.ledger.finish(admission.request_id, self._sent_at(sends))

    def _sent_at(self, sends: Sequence[float]) -> float | None:
        """When a finished request counts from. Sent (the caller said so): its answer, but no later than the arrival
        bound after the send — the server counted it on arrival, and a slow answer (or one a frozen process read only
        when it resumed) would keep it in the windows, and in what the realm seems to serve, long after the server
        let it go. Otherwise its answer (``None``)."""
        if sends:
            return min(time.time(), sends[-1] + self.limits.arrival_bound_seconds)
        return None

    def sending(self) -> None:
        """The calling thread's request leaves now (call it right before the bytes are sent, inside :meth:`slot`):
        the windows count it from this moment instead of from its answer. Outside a slot it does nothing."""
        sends = getattr(self._thread, "sends", None)
        if sends is not None:
            sends.append(time.time())

    def pause(self, seconds: float) -> None:
        """Hold every request for this realm, in every process, for ``seconds`` from now (never shortens a pause)."""
        self.ledger.pause(time.time() + seconds)
        if self.on_wait is not None:
            self.on_wait(seconds, "QuickBooks refused a request (429): every process holds off")

    def _learn(self, admission: Admission) -> None:
        limits = self.limits

        def learn(
            now: float, state: Mapping[str, Any] | None, requests: Sequence[LoggedRequest]
        ) -> Mapping[str, Any]:
            since = now - limits.span(MINUTE)
            answered = [r for r in requests if r.in_flight_until is None and r.sent_at > since]
            took = {"per_minute": len(answered), "batch_per_minute": sum(r.is_batch for r in answered)}
            return RealmBudget.load(state, limits).throttled(admission, now, limits, took).dump()

        with self._admission:  # this process admits nothing more under the budget the 429 proved wrong
            self.ledger.refused(admission.request_id, learn)

    def budget(self) -> RealmBudget:
        """What the realm has been found to take, as every process sees it."""
        return RealmBudget.load(self.ledger.budget(), self.limits)

    def _admit(self, batch: bool) -> Admission:
        decided: list[Admission] = []
        paused = [False]
        notice = self.limits.scaled(WAIT_NOTICE_SECONDS)

        def decide(
            now: float,
            paused_until: float,
            state: Mapping[str, Any] | None,
            requests: Sequence[LoggedRequest],
        ) -> tuple[float, Mapping[str, Any]]:
            budget = RealmBudget.load(state, self.limits)
            wait, budget, admission = self._decide(now, paused_until, budget, requests, batch)
            decided[:] = [admission] if admission is not None else []
            paused[:] = [paused_until > now]
            return wait, budget.dump()

        forget_after = self.limits.span(MINUTE)
        lease = self.limits.scaled(self.limits.lease_seconds)
        while True:
            with self._admission:
                admitted = self.ledger.admit(batch, decide, forget_after=forget_after, lease_seconds=lease)
            if isinstance(admitted, int):
                return replace(decided[0], request_id=admitted)
            if self.on_wait is not None and admitted >= notice and not paused[0]:  # a pause was announced
                self.on_wait(admitted, "the company's request window is full")
            time.sleep(admitted)

    def _decide(
        self,
        now: float,
        paused_until: float,
        budget: RealmBudget,
        requests: Sequence[LoggedRequest],
        batch: bool,
    ) -> tuple[float, RealmBudget, Admission | None]:
        """Seconds until one more request fits the budget's windows, the in-flight budget and the pause (0: now);
        the budget as of now; and, when the request may go, what it found."""
        limits = self.limits
        minute, poll = limits.span(MINUTE), limits.poll_seconds
        budget = budget.grown(now, minute, limits)
        flying = [r.in_flight_until is not None and r.in_flight_until > now for r in requests]
        every = [_Sent(r.sent_at, fly) for r, fly in zip(requests, flying, strict=True)]
        batches = [sent for sent, r in zip(every, requests, strict=True) if r.is_batch]
        served = [
            r
            for r, fly in zip(requests, flying, strict=True)
            if not fly and r.sent_at > now - minute and r.admitted_at > budget.event_at
        ]
        budget = budget.observed(
            {"per_minute": len(served), "batch_per_minute": sum(r.is_batch for r in served)}
        )
        waits = [
            paused_until - now,
            _window_wait(every, now, minute, budget.per_minute.cap, poll),
            _window_wait(every, now, limits.span(SECOND), limits.per_second, poll),
        ]
        if batch:
            waits.append(_window_wait(batches, now, minute, budget.batch_per_minute.cap, poll))
            if self._beyond_served(budget.batch_per_minute, _holding(batches, now, minute) + 1, limits):
                waits.append(poll)
        in_flight = sum(flying)
        if limits.concurrent and in_flight >= budget.concurrent:
            waits.append(poll)
        wait = max(waits)
        if wait > 0:
            return wait, budget, None
        counts = {
            "per_minute": _holding(every, now, minute) + 1,
            "batch_per_minute": _holding(batches, now, minute) + int(batch),
        }
        probed = frozenset(
            name
            for name in LEARNED_WINDOWS
            if (batch or name == "per_minute")
            and getattr(limits, name) > 0
            and counts[name] > getattr(budget, name).limit
        )
        admission = Admission(
            0, now, batch, counts["per_minute"], counts["batch_per_minute"], in_flight + 1, probed
        )
        for name in probed:
            budget = replace(budget, **{name: replace(getattr(budget, name), probe_at=now)})
        return 0.0, budget, admission

    @staticmethod
    def _beyond_served(learned: LearnedWindow, count: int, limits: RateLimits) -> bool:
        """Whether a batch call would make the window hold more than the realm has served plus the few allowed to
        find out more (past a fifth of the documented budget): ramping up that way, a realm that takes less than
        documented refuses at most those few before the limiter knows."""
        floor = math.ceil(limits.batch_per_minute * PLAUSIBLE_SHARE)
        return limits.batch_per_minute > 0 and count > max(floor, learned.served + UNSERVED_BATCHES)


@dataclass(frozen=True)
class _Sent:
    at: float
    in_flight: bool


def _holding(sent: list[_Sent], now: float, span: float) -> int:
    """How many requests a window of ``span`` holds now (those in flight included)."""
    return sum(1 for s in sent if s.in_flight or s.at > now - span)


def _window_wait(sent: list[_Sent], now: float, span: float, limit: int, poll: float) -> float:
    """Seconds until a window of ``span`` holding ``sent`` has room for one more (0: now).

    Requests still in flight are in the window until their answer arrives: when one of them is what blocks, check
    again after ``poll``.
    """
    if limit <= 0:
        return 0.0
    recent = sorted((s for s in sent if s.in_flight or s.at > now - span), key=lambda s: (s.in_flight, s.at))
    if len(recent) < limit:
        return 0.0
    blocking = recent[len(recent) - limit]  # the oldest len - limit + 1 requests must leave the window
    return poll if blocking.in_flight else blocking.at + span - now
