"""The sync queue (outbox): claim with a lease, acknowledge, retry with backoff, dead letter.

Rows are written by the outbox triggers (see :mod:`batchly_pipelines.store.outbox`). A worker claims due rows with a
lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` makes the claim exclusive there). A
crashed worker's rows become claimable again when the lease expires, and its late acknowledgements are refused
because every write back is fenced by ``lease_owner``.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchly_pipelines.store.db import bounded_transaction
from batchly_pipelines.store.schema import (
    QUEUE_STATES,
    UTCDateTime,
    invoice_lines,
    invoices,
    sync_queue,
    utcnow,
)

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
    """Exponential backoff with jitter (half to all of the ceiling); the record goes to the dead letter after
    ``max_attempts``. Delays are QuickBooks time, compressed by ``time_scale`` like the client's waits (the sandbox's
    ``--time-scale``; 1 against Intuit). Twelve attempts span 1.2 to 2.4 hours, so a QuickBooks outage of an hour or two
    (maintenance, an incident) leaves records pending, not dead-lettered; eight spanned 5 to 10 minutes."""

    max_attempts: int = 12
    base_delay: timedelta = timedelta(seconds=5)
    max_delay: timedelta = timedelta(hours=1)
    time_scale: float = 1.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    @property
    def longest_delay(self) -> timedelta:
        """The longest backoff, compressed like the others."""
        return self.max_delay / self.time_scale

    def delay(self, attempt: int) -> timedelta:
        """How long to wait before attempt ``attempt + 1`` (``attempt`` ≥ 1)."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** max(0, attempt - 1))) / self.time_scale
        return ceiling * self.rng.uniform(0.5, 1.0)


class SyncQueue:
    """Repository over ``sync_queue``.

    ``bound`` (a push's lease): on PostgreSQL every transaction of its own that writes is bounded by it from its
    first statement (:func:`~batchly_pipelines.store.db.bound_transaction`: idle inside it, waiting for a row lock),
    so a worker frozen inside a claim or an attempt count cannot keep rows the app's outbox triggers wait for.
    """

    def __init__(
        self, engine: Engine, policy: RetryPolicy | None = None, *, bound: timedelta | None = None
    ) -> None:
        self.engine = engine
        self.policy = policy or RetryPolicy()
        self.bound = bound

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        if self.bound is None:
            with self.engine.begin() as conn:
                yield conn
        else:
            with bounded_transaction(self.engine, idle=self.bound, lock_wait=self.bound) as conn:
                yield conn

    def claim(
        self,
        worker: str,
        *,
        limit: int,
        lease: timedelta,
        organization_id: int | None = None,
        entity_types: Iterable[str] | None = None,
        entity_ids: Iterable[int] | None = None,
        excluding: Collection[tuple[str, int]] = (),
        now: datetime | None = None,
    ) -> list[QueueItem]:
        """Lease up to ``limit`` due rows (oldest first) to ``worker``, none of the records ``excluding`` names
        (``(entity_type, entity_id)``: what this worker leaves to a later run).

        A claim is not an attempt: :meth:`count_attempts` counts one when a row's record is actually sent, so crashed
        or abandoned runs do not burn the retry budget of rows they never sent.
        """
        now = now or utcnow()
        # a record is worked on by one worker at a time: a row waits while an older row of the same record is
        # unfinished (held, or itself due first), so no claim hands out a record twice or to two workers
        older = sync_queue.alias("older")
        older_unfinished = sa.exists().where(
            older.c.entity_type == q.entity_type,
            older.c.entity_id == q.entity_id,
            older.c.status.in_(("pending", "in_progress")),
            older.c.id < q.id,
        )
        query = (
            sa.select(q.id)
            .where(is_due(now), ~older_unfinished, ~_among(excluding))
            .order_by(q.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if organization_id is not None:
            query = query.where(q.organization_id == organization_id)
        if entity_types is not None:
            query = query.where(q.entity_type.in_(list(entity_types)))
        if entity_ids is not None:
            query = query.where(q.entity_id.in_(list(entity_ids)))
        expires = now + lease
        with self._transaction() as conn:
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

        Returns how many were still leased to their worker; a lost lease acknowledges nothing. An acknowledged row
        settles its record's older dead rows too: a row pushes the record's current state, so once a later one
        synced, the dead ones are closed as superseded (their last error kept) and leave the dead letter.
        """
        now = now or utcnow()
        acked = [
            item
            for item in items
            if conn.execute(
                sa.update(sync_queue)
                .where(q.id == item.id, q.lease_owner == item.lease_owner, q.status == "in_progress")
                .values(
                    status="done", completed_at=now, updated_at=now, lease_owner=None, lease_expires_at=None
                )
            ).rowcount
        ]
        _close_superseded_dead(conn, acked, now)
        return len(acked)

    def count_attempts(self, items: Sequence[QueueItem], now: datetime | None = None) -> int:
        """Count an attempt for each row still leased to its worker, right before its record is sent."""
        if not items:
            return 0
        owners: dict[str, list[int]] = {}
        for item in items:
            owners.setdefault(item.lease_owner, []).append(item.id)
        with self._transaction() as conn:
            return sum(
                conn.execute(
                    sa.update(sync_queue)
                    .where(q.id.in_(ids), q.lease_owner == owner, q.status == "in_progress")
                    .values(attempts=q.attempts + 1, updated_at=now or utcnow())
                ).rowcount
                for owner, ids in owners.items()
            )

    def fail(
        self, item: QueueItem, error: str, *, retryable: bool = True, now: datetime | None = None
    ) -> str:
        """Record a failed attempt: back off and retry, or move to the dead letter. Returns the new status."""
        now = now or utcnow()
        with self._transaction() as conn:
            return self.fail_in(conn, item, error, retryable=retryable, now=now)

    def fail_in(
        self,
        conn: Connection,
        item: QueueItem,
        error: str,
        *,
        retryable: bool = True,
        sent: bool = True,
        now: datetime | None = None,
        retry_now: bool = False,
        parked: bool = False,
    ) -> str:
        """:meth:`fail` inside the caller's transaction. ``sent=False``: the record was not sent after all (it waits
        for another one), so the attempt :meth:`count_attempts` counted for it is given back; ``retry_now``: it is
        due again at once (what it waited for is done in this transaction), without backoff; ``parked``: it waits
        for a record in the dead letter, so it is due again only after the longest backoff (or when that record is
        pushed: :meth:`expedite_waiting_for`)."""
        now = now or utcnow()
        owned = (q.id == item.id) & (q.lease_owner == item.lease_owner) & (q.status == "in_progress")
        attempts = conn.execute(sa.select(q.attempts).where(owned).with_for_update()).scalar()
        if attempts is None:
            return "lost_lease"
        if not sent and attempts > 0:
            conn.execute(sa.update(sync_queue).where(owned).values(attempts=q.attempts - 1))
            attempts -= 1
        if not retryable or attempts >= self.policy.max_attempts:
            updated = conn.execute(
                sa.update(sync_queue)
                .where(owned)
                .values(
                    status="dead", last_error=error, updated_at=now, lease_owner=None, lease_expires_at=None
                )
            ).rowcount
            return "dead" if updated else "lost_lease"
        if retry_now:  # nothing went wrong: it only waited its turn
            requeued = _requeue(conn, owned, item.id, now, None, now)
        elif parked:
            requeued = _requeue(conn, owned, item.id, now + self.policy.longest_delay, error, now)
        else:
            requeued = _requeue(conn, owned, item.id, now + self.policy.delay(max(1, attempts)), error, now)
        return "pending" if requeued else "lost_lease"

    def renew_leases(self, worker: str, lease: timedelta, now: datetime | None = None) -> int:
        """Extend every lease ``worker`` holds, so a long-running worker's rows never look abandoned."""
        now = now or utcnow()
        with self._transaction() as conn:
            return conn.execute(
                sa.update(sync_queue)
                .where(q.lease_owner == worker, q.status == "in_progress")
                .values(lease_expires_at=now + lease)
            ).rowcount

    def expedite(
        self, organization_id: int, entity_type: str, entity_ids: Iterable[int], now: datetime | None = None
    ) -> int:
        """Make the pending rows of these records due now, skipping their backoff ("Sync now")."""
        with self._transaction() as conn:
            return conn.execute(
                sa.update(sync_queue)
                .where(
                    q.organization_id == organization_id,
                    q.entity_type == entity_type,
                    q.entity_id.in_(list(entity_ids)),
                    q.status == "pending",
                )
                .values(next_attempt_at=now or utcnow())
            ).rowcount

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
        with self._transaction() as conn:
            dead = list(conn.execute(query).scalars())
            return sum(
                _requeue(
                    conn, (q.id == row_id) & (q.status == "dead"), row_id, now, None, now, fresh_start=True
                )
                for row_id in dead
            )

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

    def next_retry(
        self,
        organization_id: int,
        *,
        entity_types: Iterable[str] | None = None,
        entity_ids: Iterable[int] | None = None,
        excluding: Collection[tuple[str, int]] = (),
    ) -> datetime | None:
        """When the organisation's soonest pending row (of these records, none of ``excluding``) is due, or ``None``
        when none is pending: a push waits for a retry due shortly instead of leaving it to the next run."""
        query = sa.select(sa.func.min(q.next_attempt_at)).where(
            q.organization_id == organization_id, q.status == "pending", ~_among(excluding)
        )
        if entity_types is not None:
            query = query.where(q.entity_type.in_(list(entity_types)))
        if entity_ids is not None:
            query = query.where(q.entity_id.in_(list(entity_ids)))
        with self.engine.connect() as conn:
            due: datetime | None = conn.execute(query).scalar()
        return due

    def expedite_waiting_for(
        self, organization_id: int, *, customers: Collection[int] = (), items: Collection[int] = ()
    ) -> int:
        """Make due now the backing-off rows of the organisation's invoices not yet in QuickBooks that reference
        one of these customers or items — just pushed: an invoice parked while one was in the dead letter follows
        it at once. Returns how many rows were expedited."""
        if not customers and not items:
            return 0
        now = utcnow()
        inv, lines = invoices.c, invoice_lines.c
        references = sa.or_(
            inv.customer_id.in_(list(customers)),
            sa.exists().where(lines.invoice_id == inv.id, lines.item_id.in_(list(items))),
        )
        waiting = (
            sa.select(q.id)
            .join(invoices, inv.id == q.entity_id)
            .where(
                q.organization_id == organization_id,
                q.entity_type == "invoice",
                q.status == "pending",
                q.next_attempt_at > now,
                inv.qbo_id.is_(None),
                references,
            )
        )
        with self._transaction() as conn:
            ids = list(conn.execute(waiting).scalars())
            if not ids:
                return 0
            return conn.execute(
                sa.update(sync_queue).where(q.id.in_(ids), q.status == "pending").values(next_attempt_at=now)
            ).rowcount

    def unsettled(
        self, organization_id: int, entity_type: str, entity_ids: Collection[int]
    ) -> dict[int, tuple[str, str | None]]:
        """The records among ``entity_ids`` that have an unfinished or dead-lettered row: record → (status,
        last error) of its liveliest row — a pending or in-progress row before a dead one (a fixed record's new row
        goes on while its dead row waits to be cleared)."""
        if not entity_ids:
            return {}
        rank = sa.case((q.status == "dead", 1), else_=0)
        query = (
            sa.select(q.entity_id, q.status, q.last_error)
            .where(
                q.organization_id == organization_id,
                q.entity_type == entity_type,
                q.entity_id.in_(list(entity_ids)),
                q.status.in_(("pending", "in_progress", "dead")),
            )
            .order_by(q.entity_id, rank.desc(), q.id)
        )
        with self.engine.connect() as conn:
            # ordered so the liveliest row of each record comes last and wins
            return {row.entity_id: (row.status, row.last_error) for row in conn.execute(query)}

    def due_by_organization(self, now: datetime | None = None) -> dict[int, tuple[int, int]]:
        """Per organisation with due work: (rows due, highest due row id). One indexed query, for the sensor."""
        query = (
            sa.select(q.organization_id, sa.func.count(), sa.func.max(q.id))
            .where(is_due(now or utcnow()))
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


def _close_superseded_dead(conn: Connection, acked: Sequence[QueueItem], now: datetime) -> None:
    """Close the dead rows of the records ``acked`` just synced (one query per entity type when there are none).

    A dead row is always older than the acknowledged one: a record's row is claimed only once its older rows are
    finished, so no newer row of it can have died while this one was held.
    """
    by_type: dict[str, dict[int, QueueItem]] = {}
    for item in sorted(acked, key=lambda acked_item: acked_item.id):  # a record's newest row names the close
        by_type.setdefault(item.entity_type, {})[item.entity_id] = item
    for entity_type, synced in by_type.items():
        dead = conn.execute(
            sa.select(q.id, q.entity_id, q.last_error).where(
                q.entity_type == entity_type, q.entity_id.in_(sorted(synced)), q.status == "dead"
            )
        ).all()
        for row_id, entity_id, error in dead:
            by = synced[entity_id]
            conn.execute(
                sa.update(sync_queue)
                .where(
                    q.id == row_id, q.id < by.id, q.status == "dead", q.organization_id == by.organization_id
                )
                .values(
                    status="done",
                    completed_at=now,
                    updated_at=now,
                    last_error=f"superseded by queue row {by.id}, which synced; last error: {error}",
                )
            )


def is_due(now: datetime) -> sa.ColumnElement[bool]:
    """Rows a worker may take: pending and due, or held under an expired lease."""
    return sa.or_(
        sa.and_(q.status == "pending", q.next_attempt_at <= now),
        sa.and_(q.status == "in_progress", q.lease_expires_at < now),
    )


def due_since() -> sa.ColumnElement[datetime]:
    """Since when a due row (:func:`is_due`) could have been taken: its next attempt's time, or when its lease
    lapsed."""
    return sa.type_coerce(
        sa.case((q.status == "in_progress", q.lease_expires_at), else_=q.next_attempt_at), UTCDateTime()
    )


def _among(records: Collection[tuple[str, int]]) -> sa.ColumnElement[bool]:
    """Rows of these ``(entity_type, entity_id)`` records (none when there are none)."""
    by_type: dict[str, list[int]] = {}
    for entity_type, entity_id in records:
        by_type.setdefault(entity_type, []).append(entity_id)
    return sa.or_(
        sa.false(), *(sa.and_(q.entity_type == kind, q.entity_id.in_(ids)) for kind, ids in by_type.items())
    )


def _requeue(
    conn: Connection,
    guard: sa.ColumnElement[bool],
    row_id: int,
    next_attempt_at: datetime,
    error: str | None,
    now: datetime,
    *,
    fresh_start: bool = False,
) -> bool:
    """Make ``row_id`` pending again while ``guard`` still holds; False when it no longer does (lost lease).

    The partial unique index allows one pending row per record. When the app edited the record meanwhile, the
    update violates it; then this row folds into that newer pending row, which carries on with this row's
    attempts and error, and this row is closed. The newer row cannot be claimed meanwhile: a row waits while an
    older row of its record is unfinished (see :meth:`SyncQueue.claim`).
    """
    pending = {
        "status": "pending",
        "next_attempt_at": next_attempt_at,
        "last_error": error,
        "updated_at": now,
    }
    released = {"lease_owner": None, "lease_expires_at": None}
    try:
        with conn.begin_nested():
            values = {**pending, **released, **({"attempts": 0} if fresh_start else {})}
            return bool(conn.execute(sa.update(sync_queue).where(guard).values(**values)).rowcount)
    except sa.exc.IntegrityError:
        pass
    row = conn.execute(sa.select(sync_queue).where(guard).with_for_update()).mappings().first()
    if row is None:
        return False
    newer = conn.execute(
        sa.select(q.id, q.attempts)
        .where(q.entity_type == row["entity_type"], q.entity_id == row["entity_id"], q.status == "pending")
        .with_for_update()
    ).one()
    conn.execute(
        sa.update(sync_queue)
        .where(q.id == newer.id)
        .values(
            **pending,
            attempts=newer.attempts if fresh_start else max(newer.attempts, row["attempts"]),
            change_count=q.change_count + row["change_count"],
        )
    )
    superseded = f"superseded by queue row {newer.id}" + (f"; last error: {error}" if error else "")
    conn.execute(
        sa.update(sync_queue)
        .where(guard)
        .values(status="done", completed_at=now, updated_at=now, last_error=superseded, **released)
    )
    return True
