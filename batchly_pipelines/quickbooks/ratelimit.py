"""Per-realm QuickBooks limits shared by every thread and process that talks to the realm.

Intuit's limits per realm: 500 requests per minute (batch calls included), 10 per second, 10 in flight, 40 batch calls
per minute. A :class:`SharedRateLimiter` admits each request against the realm's *ledger*, a record of its requests
that every process sees (``store.rate_limits.DatabaseRateLedger`` keeps it in the Batchly database, so the limiter
behaves the same on SQLite and PostgreSQL and needs no other infrastructure):

- every admission runs under the ledger's per-realm lock, so two processes never both take the last slot; the ledger
  also carries a pause: after a 429 every process holds off until then;
- a request holds an in-flight slot while it is in flight (until its lease ends, so a process that crashed mid-request
  cannot hold a slot for ever) and counts as "now" in every window; when its answer arrives its time becomes that
  moment. The server admitted the request before it answered, so a window measured from the answer can never end
  before the server's does, however late a process got to send.

Windows are compressed by ``time_scale`` exactly like the sandbox's ``--time-scale``, and stretched by a small safety
margin in case the server's bookkeeping differs slightly from ours (Intuit does not document its algorithm).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

MINUTE = 60.0
SECOND = 1.0


@dataclass(frozen=True)
class RateLimits:
    """Per-realm limits (Intuit's documented values by default) and the time scale that compresses their windows."""

    per_minute: int = 500
    per_second: int = 10
    concurrent: int = 10
    batch_per_minute: int = 40
    time_scale: float = 1.0
    window_margin: float = 0.03  # windows are this fraction longer than the server's…
    window_slack_seconds: float = 0.005  # …plus this
    lease_seconds: float = 180.0  # a crashed process's in-flight slot frees after this (real seconds)
    poll_seconds: float = 0.005  # how often to look again when a request in flight is what blocks

    def span(self, seconds: float) -> float:
        """A documented window length as this limiter measures it: scaled, plus the safety margin."""
        return seconds / self.time_scale * (1 + self.window_margin) + self.window_slack_seconds


class LoggedRequest(Protocol):
    """One request in a realm's ledger (times in ``time.time()`` seconds).

    ``sent_at`` is when its answer arrived (while in flight: when it was admitted); ``in_flight_until`` is when its
    in-flight slot lapses, ``None`` once answered.
    """

    @property
    def sent_at(self) -> float: ...

    @property
    def is_batch(self) -> bool: ...

    @property
    def in_flight_until(self) -> float | None: ...


# (now, paused_until, the realm's logged requests) -> seconds to wait before a new request may go (0: now)
AdmissionWait = Callable[[float, float, Sequence[LoggedRequest]], float]


class RateLedger(Protocol):
    """The shared record of one realm's requests (``store.rate_limits.DatabaseRateLedger`` in production)."""

    def admit(
        self, batch: bool, wait: AdmissionWait, *, forget_after: float, lease_seconds: float
    ) -> int | float:
        """Under the realm's lock: forget answered requests older than ``forget_after`` seconds, then ask ``wait``.

        When it answers 0, log a new in-flight request (its slot lapses after ``lease_seconds``) and return its id
        (an ``int``); otherwise return the wait (a ``float``) without logging anything.
        """
        ...

    def finish(self, request_id: int) -> None:
        """The request's answer arrived: it leaves the in-flight slots and its time becomes now."""
        ...

    def pause(self, until: float) -> None:
        """Hold every request of the realm until ``until`` (``time.time()`` seconds); never shortens a pause."""
        ...


class SharedRateLimiter:
    """Admission to one realm's request budget, shared by everyone who uses the same ledger.

    Use ``with limiter.slot(batch=…) as waited:`` around each HTTP request; ``waited`` is how long the call had to
    wait for a slot. :meth:`pause` makes every process hold off (after a 429).
    """

    def __init__(self, ledger: RateLedger, limits: RateLimits | None = None) -> None:
        self.ledger = ledger
        self.limits = limits or RateLimits()
        # Threads of one process queue here first: cheap, and keeps SQLite's single writer lock uncontended.
        self._local_slots = threading.BoundedSemaphore(self.limits.concurrent or 1_000_000)
        self._admission = threading.Lock()

    @contextmanager
    def slot(self, batch: bool = False) -> Iterator[float]:
        """Hold one in-flight slot and one place in each window for the duration of a request."""
        started = time.monotonic()
        with self._local_slots:
            request_id = self._admit(batch)
            try:
                yield time.monotonic() - started
            finally:
                self.ledger.finish(request_id)

    def pause(self, seconds: float) -> None:
        """Hold every request for this realm, in every process, for ``seconds`` from now (never shortens a pause)."""
        self.ledger.pause(time.time() + seconds)

    def _admit(self, batch: bool) -> int:
        def wait(now: float, paused_until: float, requests: Sequence[LoggedRequest]) -> float:
            return self._wait(now, paused_until, requests, batch)

        forget_after = self.limits.span(MINUTE)
        while True:
            with self._admission:
                admitted = self.ledger.admit(
                    batch, wait, forget_after=forget_after, lease_seconds=self.limits.lease_seconds
                )
            if isinstance(admitted, int):
                return admitted
            time.sleep(admitted)

    def _wait(self, now: float, paused_until: float, requests: Sequence[LoggedRequest], batch: bool) -> float:
        """Seconds until one more request fits every window, the in-flight limit and the pause (0: now)."""
        limits = self.limits
        minute = limits.span(MINUTE)
        flying = [r.in_flight_until is not None and r.in_flight_until > now for r in requests]
        every = [_Sent(r.sent_at, fly) for r, fly in zip(requests, flying, strict=True)]
        waits = [
            paused_until - now,
            _window_wait(every, now, minute, limits.per_minute, limits.poll_seconds),
            _window_wait(every, now, limits.span(SECOND), limits.per_second, limits.poll_seconds),
        ]
        if batch:
            batches = [sent for sent, r in zip(every, requests, strict=True) if r.is_batch]
            waits.append(_window_wait(batches, now, minute, limits.batch_per_minute, limits.poll_seconds))
        if limits.concurrent and sum(flying) >= limits.concurrent:
            waits.append(limits.poll_seconds)
        return max(waits)


@dataclass(frozen=True)
class _Sent:
    at: float
    in_flight: bool


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
