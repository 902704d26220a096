"""Per-realm QuickBooks limits shared by every thread and process, kept in the Batchly database.

Intuit's limits per realm: 500 requests per minute (batch calls included), 10 per second, 10 in flight, 40 batch calls
per minute. The database is the shared backend, so the limiter behaves the same on SQLite and PostgreSQL and needs no
other infrastructure:

- ``qbo_rate_realms``: one row per realm. Every admission locks it (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's
  ``BEGIN IMMEDIATE`` serialises writers anyway), so two processes never both take the last slot. It also carries
  ``paused_until``: after a 429 every process holds off until then.
- ``qbo_rate_requests``: one row per request. While it is in flight it holds an in-flight slot (until
  ``in_flight_until``, so a process that crashed mid-request cannot hold a slot for ever) and counts as "now" in every
  window; when its answer arrives ``sent_at`` becomes that moment. The server admitted the request before it answered,
  so a window measured from the answer can never end before the server's does, however late a process got to send.

Windows are compressed by ``time_scale`` exactly like the sandbox's ``--time-scale``, and stretched by a small safety
margin in case the server's bookkeeping differs slightly from ours (Intuit does not document its algorithm).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchly_pipelines.store.schema import qbo_rate_realms, qbo_rate_requests

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


class DatabaseRateLimiter:
    """Admission to one realm's request budget, shared through the Batchly database.

    Use ``with limiter.slot(batch=…) as waited:`` around each HTTP request; ``waited`` is how long the call had to
    wait for a slot. :meth:`pause` makes every process hold off (after a 429).
    """

    def __init__(self, engine: Engine, realm_id: str, limits: RateLimits | None = None) -> None:
        self.engine = engine
        self.realm_id = realm_id
        self.limits = limits or RateLimits()
        # Threads of one process queue here first: cheap, and keeps SQLite's single writer lock uncontended.
        self._local_slots = threading.BoundedSemaphore(self.limits.concurrent or 1_000_000)
        self._admission = threading.Lock()
        self._ensure_realm_row()

    @contextmanager
    def slot(self, batch: bool = False) -> Iterator[float]:
        """Hold one in-flight slot and one place in each window for the duration of a request."""
        started = time.monotonic()
        with self._local_slots:
            request_id = self._admit(batch)
            try:
                yield time.monotonic() - started
            finally:
                with self.engine.begin() as conn:
                    conn.execute(
                        sa.update(qbo_rate_requests)
                        .where(qbo_rate_requests.c.id == request_id)
                        .values(sent_at=time.time(), in_flight_until=None)
                    )

    def pause(self, seconds: float) -> None:
        """Hold every request for this realm, in every process, for ``seconds`` from now (never shortens a pause)."""
        until = time.time() + seconds
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(qbo_rate_realms)
                .where(qbo_rate_realms.c.realm_id == self.realm_id, qbo_rate_realms.c.paused_until < until)
                .values(paused_until=until)
            )

    def _admit(self, batch: bool) -> int:
        while True:
            with self._admission, self.engine.begin() as conn:
                wait = self._try_admit(conn, batch)
            if isinstance(wait, int):
                return wait
            time.sleep(wait)

    def _try_admit(self, conn: Connection, batch: bool) -> int | float:
        """Take a slot and return the request's row id, or return how long to wait (seconds) before trying again."""
        limits, realm, r = self.limits, self.realm_id, qbo_rate_requests.c
        paused_until = conn.execute(
            sa.select(qbo_rate_realms.c.paused_until)
            .where(qbo_rate_realms.c.realm_id == realm)
            .with_for_update()
        ).scalar_one()
        now = time.time()
        minute = limits.span(MINUTE)
        finished = sa.or_(r.in_flight_until.is_(None), r.in_flight_until <= now)
        conn.execute(
            sa.delete(qbo_rate_requests).where(r.realm_id == realm, r.sent_at <= now - minute, finished)
        )
        rows = conn.execute(
            sa.select(r.sent_at, r.is_batch, r.in_flight_until).where(r.realm_id == realm)
        ).all()
        flying = [row.in_flight_until is not None and row.in_flight_until > now for row in rows]
        every = [_Sent(row.sent_at, fly) for row, fly in zip(rows, flying, strict=True)]
        waits = [
            paused_until - now,
            _window_wait(every, now, minute, limits.per_minute, limits.poll_seconds),
            _window_wait(every, now, limits.span(SECOND), limits.per_second, limits.poll_seconds),
        ]
        if batch:
            batches = [sent for sent, row in zip(every, rows, strict=True) if row.is_batch]
            waits.append(_window_wait(batches, now, minute, limits.batch_per_minute, limits.poll_seconds))
        if limits.concurrent and sum(flying) >= limits.concurrent:
            waits.append(limits.poll_seconds)
        wait = max(waits)
        if wait > 0:
            return wait
        inserted = conn.execute(
            sa.insert(qbo_rate_requests).values(
                realm_id=realm, is_batch=batch, sent_at=now, in_flight_until=now + limits.lease_seconds
            )
        ).inserted_primary_key
        assert inserted is not None
        return int(inserted[0])

    def _ensure_realm_row(self) -> None:
        with self.engine.begin() as conn:
            exists = conn.execute(
                sa.select(qbo_rate_realms.c.realm_id).where(qbo_rate_realms.c.realm_id == self.realm_id)
            ).first()
            if exists is None:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            sa.insert(qbo_rate_realms).values(realm_id=self.realm_id, paused_until=0.0)
                        )
                except sa.exc.IntegrityError:
                    pass  # another process created it first


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
