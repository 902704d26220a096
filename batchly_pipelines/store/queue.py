"""The sync queue (outbox): claim with a lease, acknowledge, retry with backoff, dead letter.

Rows are written by the outbox triggers (see :mod:`batchly_pipelines.store.outbox`). A worker claims due rows with a
lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` makes the claim exclusive there). A
crashed worker's rows become claimable again when the lease expires, and its late acknowledgements are refused
because every write back is fenced by ``lease_owner``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchly_pipelines.store.schema import QUEUE_STATES, sync_queue, utcnow

q = sync_queue.c


@dataclass(frozen=True)
class QueueItem:
    """One claimed unit of work: push the current state of one record."""

    id: int
    organization_id: int
    entity_type: str
    entity_id: int
    operation: str
    attempts: int
    change_count: int
    lease_owner: str
    lease_expires_at: datetime


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; the record goes to the dead letter after ``max_attempts``."""

    max_attempts: int = 8
    base_delay: timedelta = timedelta(seconds=5)
    max_delay: timedelta = timedelta(hours=1)
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delay(self, attempt: int) -> timedelta:
        """How long to wait before attempt ``attempt + 1`` (``attempt`` ≥ 1)."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** max(0, attempt - 1)))
        return ceiling * self.rng.uniform(0.5, 1.0)


class SyncQueue:
    """Repository over ``sync_queue``."""

    def __init__(self, engine: Engine, policy: RetryPolicy | None = None) -> None:
        self.engine = engine
        self.policy = policy or RetryPolicy()

    def claim(
        self,
        worker: str,
        *,
        limit: int,
        lease: timedelta,
        organization_id: int | None = None,
        entity_types: Iterable[str] | None = None,
        entity_ids: Iterable[int] | None = None,
        now: datetime | None = None,
    ) -> list[QueueItem]:
        """Lease up to ``limit`` due rows (oldest first) to ``worker``, counting an attempt for each."""
        now = now or utcnow()
        due = sa.or_(
            sa.and_(q.status == "pending", q.next_attempt_at <= now),
            sa.and_(q.status == "in_progress", q.lease_expires_at < now),
        )
        query = sa.select(q.id).where(due).order_by(q.id).limit(limit).with_for_update(skip_locked=True)
        if organization_id is not None:
            query = query.where(q.organization_id == organization_id)
        if entity_types is not None:
            query = query.where(q.entity_type.in_(list(entity_types)))
        if entity_ids is not None:
            query = query.where(q.entity_id.in_(list(entity_ids)))
        expires = now + lease
        with self.engine.begin() as conn:
            ids = list(conn.execute(query).scalars())
            if not ids:
                return []
            conn.execute(
                sa.update(sync_queue)
                .where(q.id.in_(ids))
                .values(
                    status="in_progress",
                    lease_owner=worker,
                    lease_expires_at=expires,
                    attempts=q.attempts + 1,
                    updated_at=now,
                )
            )
            rows = conn.execute(sa.select(sync_queue).where(q.id.in_(ids)).order_by(q.id)).mappings()
            return [
                QueueItem(
                    id=r["id"],
                    organization_id=r["organization_id"],
                    entity_type=r["entity_type"],
                    entity_id=r["entity_id"],
                    operation=r["operation"],
                    attempts=r["attempts"],
                    change_count=r["change_count"],
                    lease_owner=r["lease_owner"],
                    lease_expires_at=r["lease_expires_at"],
                )
                for r in rows
            ]

    @staticmethod
    def ack(conn: Connection, items: Sequence[QueueItem], now: datetime | None = None) -> int:
        """Mark ``items`` done inside the caller's transaction (the one that stores the results).

        Returns how many were still leased to their worker; a lost lease acknowledges nothing.
        """
        now = now or utcnow()
        done = 0
        for item in items:
            done += conn.execute(
                sa.update(sync_queue)
                .where(q.id == item.id, q.lease_owner == item.lease_owner, q.status == "in_progress")
                .values(
                    status="done", completed_at=now, updated_at=now, lease_owner=None, lease_expires_at=None
                )
            ).rowcount
        return done

    def fail(
        self, item: QueueItem, error: str, *, retryable: bool = True, now: datetime | None = None
    ) -> str:
        """Record a failed attempt: back off and retry, or move to the dead letter. Returns the new status."""
        now = now or utcnow()
        with self.engine.begin() as conn:
            return self.fail_in(conn, item, error, retryable=retryable, now=now)

    def fail_in(
        self,
        conn: Connection,
        item: QueueItem,
        error: str,
        *,
        retryable: bool = True,
        now: datetime | None = None,
    ) -> str:
        """:meth:`fail` inside the caller's transaction."""
        now = now or utcnow()
        owned = (q.id == item.id) & (q.lease_owner == item.lease_owner) & (q.status == "in_progress")
        if not retryable or item.attempts >= self.policy.max_attempts:
            updated = conn.execute(
                sa.update(sync_queue)
                .where(owned)
                .values(
                    status="dead", last_error=error, updated_at=now, lease_owner=None, lease_expires_at=None
                )
            ).rowcount
            return "dead" if updated else "lost_lease"
        if not conn.execute(sa.select(q.id).where(owned)).first():
            return "lost_lease"
        _requeue(conn, item.id, now + self.policy.delay(item.attempts), error, now)
        return "pending"

    def retry_dead(
        self,
        *,
        ids: Iterable[int] | None = None,
        organization_id: int | None = None,
        now: datetime | None = None,
    ) -> int:
        """Give dead-lettered rows a fresh start (attempts reset). Returns how many were revived."""
        now = now or utcnow()
        query = sa.select(q.id).where(q.status == "dead")
        if ids is not None:
            query = query.where(q.id.in_(list(ids)))
        if organization_id is not None:
            query = query.where(q.organization_id == organization_id)
        with self.engine.begin() as conn:
            dead = list(conn.execute(query).scalars())
            for row_id in dead:
                conn.execute(sa.update(sync_queue).where(q.id == row_id).values(attempts=0))
                _requeue(conn, row_id, now, None, now)
            return len(dead)

    def depth(self, organization_id: int | None = None) -> dict[int, dict[str, int]]:
        """Row counts by state per organisation (every state present, zero when empty)."""
        query = sa.select(q.organization_id, q.status, sa.func.count()).group_by(q.organization_id, q.status)
        if organization_id is not None:
            query = query.where(q.organization_id == organization_id)
        result: dict[int, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for org, status, count in conn.execute(query):
                result.setdefault(org, dict.fromkeys(QUEUE_STATES, 0))[status] = count
        return result

    def due_by_organization(self, now: datetime | None = None) -> dict[int, tuple[int, int]]:
        """Per organisation with due work: (rows due, highest due row id). One indexed query, for the sensor."""
        now = now or utcnow()
        due = sa.or_(
            sa.and_(q.status == "pending", q.next_attempt_at <= now),
            sa.and_(q.status == "in_progress", q.lease_expires_at < now),
        )
        query = (
            sa.select(q.organization_id, sa.func.count(), sa.func.max(q.id))
            .where(due)
            .group_by(q.organization_id)
        )
        with self.engine.connect() as conn:
            return {org: (count, max_id) for org, count, max_id in conn.execute(query)}

    def list(
        self, *, status: str | None = None, organization_id: int | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Queue rows, newest first, for operators."""
        query = sa.select(sync_queue).order_by(q.id.desc()).limit(limit)
        if status is not None:
            query = query.where(q.status == status)
        if organization_id is not None:
            query = query.where(q.organization_id == organization_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]


def _requeue(
    conn: Connection, row_id: int, next_attempt_at: datetime, error: str | None, now: datetime
) -> None:
    """Make ``row_id`` pending again, folding it into a newer pending row of the same record if one exists.

    The partial unique index allows one pending row per record: when the app edited the record meanwhile, that
    newer row carries on with this row's attempt count and error, and this row is closed.
    """
    row = conn.execute(sa.select(sync_queue).where(q.id == row_id)).mappings().one()
    newer = conn.execute(
        sa.select(q.id, q.attempts).where(
            q.entity_type == row["entity_type"],
            q.entity_id == row["entity_id"],
            q.status == "pending",
            q.id != row_id,
        )
    ).first()
    if newer is None:
        conn.execute(
            sa.update(sync_queue)
            .where(q.id == row_id)
            .values(
                status="pending",
                next_attempt_at=next_attempt_at,
                last_error=error,
                updated_at=now,
                lease_owner=None,
                lease_expires_at=None,
            )
        )
        return
    conn.execute(
        sa.update(sync_queue)
        .where(q.id == newer.id)
        .values(
            attempts=max(newer.attempts, row["attempts"]),
            change_count=q.change_count + row["change_count"],
            last_error=error,
            next_attempt_at=next_attempt_at,
            updated_at=now,
        )
    )
    conn.execute(
        sa.update(sync_queue)
        .where(q.id == row_id)
        .values(
            status="done",
            completed_at=now,
            updated_at=now,
            lease_owner=None,
            lease_expires_at=None,
            last_error=f"superseded by queue row {newer.id}" + (f"; last error: {error}" if error else ""),
        )
    )
