"""The ledger behind the per-realm QuickBooks rate limiter, shared by every process through the Batchly database.

- ``qbo_rate_realms``: one row per realm. Every admission locks it (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's
  ``BEGIN IMMEDIATE`` serialises writers anyway), so two processes never both take the last slot. It also carries
  ``paused_until`` (after a 429 every process holds off until then) and ``budget``, what the limiter learned the
  realm takes (JSON; ``NULL``: nothing learned, Intuit's numbers).
- ``qbo_rate_requests``: one row per request. While it is in flight it holds an in-flight slot (until
  ``in_flight_until``, so a process that crashed mid-request cannot hold a slot for ever); when its answer arrives
  ``sent_at`` becomes the moment it was sent (or, when the limiter was not told, that of the answer). A request
  answered 429, or never sent, is deleted: the server did not count it.

What counts against which window, and what the budget means, is the limiter's business (``quickbooks.ratelimit``):
an admission hands it the realm's rows and budget, stores the budget it returns and logs a request only when it
says so. Times are ``time.time()`` seconds.

Every transaction here is a few statements with nothing in between, and is bounded on PostgreSQL
(:data:`~batchly_pipelines.store.db.SHORT_TRANSACTION`): a process frozen inside an admission (SIGSTOP, a pause)
loses its session — and the realm row every other process's admission waits for — within seconds; when it resumes,
that admission fails with a dropped connection and its request is not logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchly_pipelines.store.db import DATABASE_ERRORS, SHORT_TRANSACTION, bounded_transaction
from batchly_pipelines.store.schema import qbo_rate_realms, qbo_rate_requests

LEDGER_ATTEMPTS = 3  # a finish, withdrawal or pause is asked this often before its error reaches the request
LEDGER_RETRY_SECONDS = 0.1


@dataclass(frozen=True)
class RateRequest:
    """One ``qbo_rate_requests`` row: when it was admitted, when it was answered (in flight: admitted), whether it
    is a batch call, and until when it is in flight."""

    admitted_at: float
    sent_at: float
    is_batch: bool
    in_flight_until: float | None


Budget = Mapping[str, Any] | None


class DatabaseRateLedger:
    """One realm's requests in ``qbo_rate_realms`` / ``qbo_rate_requests``; a ``quickbooks.ratelimit.RateLedger``."""

    def __init__(self, engine: Engine, realm_id: str) -> None:
        self.engine = engine
        self.realm_id = realm_id
        self._ensure_realm_row()

    def admit(
        self,
        batch: bool,
        decide: Callable[[float, float, Budget, Sequence[RateRequest]], tuple[float, Budget]],
        *,
        forget_after: float,
        lease_seconds: float,
    ) -> int | float:
        """Under the realm's lock: forget answered requests older than ``forget_after`` seconds, then ask
        ``decide(now, paused_until, budget, requests)`` and store the budget it returns. When it answers 0, log an
        in-flight request and return its id (an ``int``); otherwise return the wait (a ``float``)."""
        realm, r = self.realm_id, qbo_rate_requests.c
        wait = timedelta(
            seconds=lease_seconds
        )  # behind admissions, each bounded: longer means something is wrong
        with bounded_transaction(self.engine, idle=SHORT_TRANSACTION, lock_wait=wait) as conn:
            paused_until, budget = conn.execute(
                sa.select(qbo_rate_realms.c.paused_until, qbo_rate_realms.c.budget)
                .where(qbo_rate_realms.c.realm_id == realm)
                .with_for_update()
            ).one()
            now = time.time()
            finished = sa.or_(r.in_flight_until.is_(None), r.in_flight_until <= now)
            conn.execute(
                sa.delete(qbo_rate_requests).where(
                    r.realm_id == realm, r.sent_at <= now - forget_after, finished
                )
            )
            rows = conn.execute(
                sa.select(r.admitted_at, r.sent_at, r.is_batch, r.in_flight_until).where(r.realm_id == realm)
            ).all()
            seconds, learned = decide(now, paused_until, budget, [RateRequest(*row) for row in rows])
            self._store_budget(conn, budget, learned)
            if seconds > 0:
                return float(seconds)
            inserted = conn.execute(
                sa.insert(qbo_rate_requests).values(
                    realm_id=realm,
                    is_batch=batch,
                    admitted_at=now,
                    sent_at=now,
                    in_flight_until=now + lease_seconds,
                )
            ).inserted_primary_key
        assert inserted is not None
        return int(inserted[0])

    def finish(self, request_id: int, sent_at: float | None = None) -> None:
        """The request's answer arrived: it leaves the in-flight slots and its time becomes ``sent_at`` (when it was
        sent), or now when that is not known. Asked again when the database dropped the connection (see
        :meth:`_idempotent`)."""
        self._idempotent(
            sa.update(qbo_rate_requests)
            .where(qbo_rate_requests.c.id == request_id)
            .values(sent_at=time.time() if sent_at is None else sent_at, in_flight_until=None)
        )

    def withdraw(self, request_id: int) -> None:
        """The request was never sent: it leaves the ledger (its in-flight slot and every window)."""
        self._idempotent(sa.delete(qbo_rate_requests).where(qbo_rate_requests.c.id == request_id))

    def pause(self, until: float) -> None:
        """Hold every request of the realm until ``until``; never shortens a pause."""
        self._idempotent(
            sa.update(qbo_rate_realms)
            .where(qbo_rate_realms.c.realm_id == self.realm_id, qbo_rate_realms.c.paused_until < until)
            .values(paused_until=until)
        )

    def _idempotent(self, statement: sa.Executable) -> None:
        """Run a statement that may run twice, asked again (up to :data:`LEDGER_ATTEMPTS` times) when the database
        dropped the connection — the pool reconnects. A finished request left in flight by one dropped connection
        held its in-flight slot and its place in every window for a whole lease (36 s at time scale 5): three database
        drops of a chaos run cost about 15 batch calls."""
        for attempt in range(1, LEDGER_ATTEMPTS + 1):
            try:
                with bounded_transaction(self.engine, idle=SHORT_TRANSACTION) as conn:
                    conn.execute(statement)
                return
            except DATABASE_ERRORS:
                if attempt == LEDGER_ATTEMPTS:
                    raise
                time.sleep(LEDGER_RETRY_SECONDS)

    def refused(
        self, request_id: int, learn: Callable[[float, Budget, Sequence[RateRequest]], Budget]
    ) -> None:
        """The request was answered 429: under the realm's lock it leaves the ledger (the server did not count it)
        and the budget ``learn(now, budget, requests)`` returns is stored."""
        realm, r = self.realm_id, qbo_rate_requests.c
        with bounded_transaction(self.engine, idle=SHORT_TRANSACTION) as conn:
            budget = conn.execute(
                sa.select(qbo_rate_realms.c.budget)
                .where(qbo_rate_realms.c.realm_id == realm)
                .with_for_update()
            ).scalar_one()
            conn.execute(sa.delete(qbo_rate_requests).where(r.id == request_id))
            rows = conn.execute(
                sa.select(r.admitted_at, r.sent_at, r.is_batch, r.in_flight_until).where(r.realm_id == realm)
            ).all()
            self._store_budget(conn, budget, learn(time.time(), budget, [RateRequest(*row) for row in rows]))

    def budget(self) -> Budget:
        """The realm's budget as stored (``None``: nothing learned yet)."""
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(qbo_rate_realms.c.budget).where(qbo_rate_realms.c.realm_id == self.realm_id)
            ).scalar_one()

    def _store_budget(self, conn: Connection, stored: Budget, learned: Budget) -> None:
        if learned is not None and learned != stored:
            conn.execute(
                sa.update(qbo_rate_realms)
                .where(qbo_rate_realms.c.realm_id == self.realm_id)
                .values(budget=dict(learned))
            )

    def _ensure_realm_row(self) -> None:
        with bounded_transaction(self.engine, idle=SHORT_TRANSACTION) as conn:
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
