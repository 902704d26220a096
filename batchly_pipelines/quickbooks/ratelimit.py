"""Per-realm QuickBooks limits shared by every thread and process, kept in the Batchly database.

Intuit's limits per realm: 500 requests per minute (batch calls included), 10 per second, 10 in flight, 40 batch calls
per minute. The database is the shared backend, so the limiter behaves the same on SQLite and PostgreSQL and needs no
other infrastructure:

- ``qbo_rate_realms``: one row per realm. Every admission locks it (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's
  ``BEGIN IMMEDIATE`` serialises writers anyway), so two processes never both take the last slot. It also carries
  ``paused_until``: after a 429 every process holds off until then.
- ``qbo_rate_events``: one row per request sent (flagged for batch calls); the sliding windows count them.
- ``qbo_rate_leases``: one row per request in flight, deleted when the answer arrives and ignored after its expiry, so a
  process that crashed mid-request cannot hold a slot for ever.

Windows are compressed by ``time_scale`` exactly like the sandbox's ``--time-scale``, and stretched by a small safety
margin because the server starts its window a little after we start ours.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchly_pipelines.store.schema import qbo_rate_events, qbo_rate_leases, qbo_rate_realms

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
    window_slack_seconds: float = 0.005  # …plus this, for the time a request takes to reach it
    lease_seconds: float = 180.0  # a crashed process's in-flight slot frees after this (real seconds)
    poll_seconds: float = 0.01  # how often to look for a free in-flight slot held by another process

    def span(self, seconds: float) -> float:
        """A documented window length as this limiter measures it: scaled, plus the safety margin."""
        return seconds / self.time_scale * (1 + self.window_margin) + self.window_slack_seconds

    def scaled(self, seconds: float) -> float:
        """A documented duration compressed by the time scale."""
        return seconds / self.time_scale


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
            lease_id = self._admit(batch)
            try:
                yield time.monotonic() - started
            finally:
                with self.engine.begin() as conn:
                    conn.execute(sa.delete(qbo_rate_leases).where(qbo_rate_leases.c.id == lease_id))

    def pause(self, seconds: float) -> None:
        """Hold every request for this realm, in every process, for ``seconds`` from now (never shortens a pause)."""
        until = time.time() + seconds
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(qbo_rate_realms)
                .where(qbo_rate_realms.c.realm_id == self.realm_id, qbo_rate_realms.c.paused_until < until)
                .values(paused_until=until)
            )

    def _admit(self, batch: bool) -> str:
        while True:
            with self._admission, self.engine.begin() as conn:
                wait = self._try_admit(conn, batch)
            if isinstance(wait, str):
                return wait
            time.sleep(wait)

    def _try_admit(self, conn: Connection, batch: bool) -> str | float:
        """Take a slot and return its lease id, or return how long to wait before trying again."""
        limits, realm = self.limits, self.realm_id
        paused_until = conn.execute(
            sa.select(qbo_rate_realms.c.paused_until)
            .where(qbo_rate_realms.c.realm_id == realm)
            .with_for_update()
        ).scalar_one()
        now = time.time()
        minute = limits.span(MINUTE)
        conn.execute(
            sa.delete(qbo_rate_events).where(
                qbo_rate_events.c.realm_id == realm, qbo_rate_events.c.sent_at <= now - minute
            )
        )
        conn.execute(
            sa.delete(qbo_rate_leases).where(
                qbo_rate_leases.c.realm_id == realm, qbo_rate_leases.c.expires_at <= now
            )
        )
        events = conn.execute(
            sa.select(qbo_rate_events.c.sent_at, qbo_rate_events.c.is_batch)
            .where(qbo_rate_events.c.realm_id == realm)
            .order_by(qbo_rate_events.c.sent_at)
        ).all()
        in_flight = conn.execute(
            sa.select(sa.func.count()).select_from(qbo_rate_leases).where(qbo_rate_leases.c.realm_id == realm)
        ).scalar_one()

        every = [row.sent_at for row in events]
        waits = [
            paused_until - now,
            _window_wait(every, now, minute, limits.per_minute),
            _window_wait(every, now, limits.span(SECOND), limits.per_second),
        ]
        if batch:
            batches = [row.sent_at for row in events if row.is_batch]
            waits.append(_window_wait(batches, now, minute, limits.batch_per_minute))
        if limits.concurrent and in_flight >= limits.concurrent:
            waits.append(limits.poll_seconds)
        wait = max(waits)
        if wait > 0:
            return wait
        lease_id = uuid.uuid4().hex
        conn.execute(sa.insert(qbo_rate_events).values(realm_id=realm, is_batch=batch, sent_at=now))
        conn.execute(
            sa.insert(qbo_rate_leases).values(
                id=lease_id, realm_id=realm, expires_at=now + limits.lease_seconds
            )
        )
        return lease_id

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


def _window_wait(sent: list[float], now: float, span: float, limit: int) -> float:
    """Seconds until a window of ``span`` holding the sorted send times ``sent`` has room for one more (0: now)."""
    recent = [at for at in sent if at > now - span]
    if limit <= 0 or len(recent) < limit:
        return 0.0
    # The oldest len - limit + 1 sends must leave the window.
    return recent[len(recent) - limit] + span - now
