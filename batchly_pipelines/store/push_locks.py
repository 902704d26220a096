"""The realm push lock: one push per QuickBooks company at a time, across processes, machines and entry points.

A push holds ``qbo_push_locks[realm]`` under a lease it renews while it works. Before every write to QuickBooks and in
every write-back to Batchly the holder proves it still holds the lock with enough lease left for the request to finish
(:func:`remaining`); a holder that lost it stops writing. Every comparison uses the database's clock, so processes whose
clocks disagree still agree on who holds a lock.

A lapsed lock is not free at once: a write sent just before the lease ran out may still be applied by QuickBooks for a
while (Intuit gives up on a request after 120 s), so another worker takes over only ``grace`` after it lapsed. A dead
holder's realm is free again after one lease plus that grace, without an operator.

Every transaction here is bounded by the lease on PostgreSQL (:func:`~batchly_pipelines.store.db.bound_transaction`):
a process frozen inside one loses its session instead of keeping the lock row locked for everyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from batchly_pipelines.store.db import (
    SHORT_TRANSACTION,
    Connection,
    Engine,
    bound_transaction,
    bounded_transaction,
    database_now,
)
from batchly_pipelines.store.schema import qbo_push_locks

c = qbo_push_locks.c


@dataclass(frozen=True)
class LockHolder:
    """Who holds a realm's push lock, and until when."""

    realm_id: str
    owner: str
    organization_id: int
    acquired_at: datetime
    expires_at: datetime


def _holder(row: sa.Row[tuple[object, ...]]) -> LockHolder:
    return LockHolder(row.realm_id, row.owner, row.organization_id, row.acquired_at, row.expires_at)


def acquire(
    engine: Engine,
    realm_id: str,
    owner: str,
    organization_id: int,
    lease: timedelta,
    grace: timedelta = timedelta(0),
) -> LockHolder | None:
    """Take the realm's lock for ``owner`` (or extend it if ``owner`` holds it already).

    Another owner's lock is taken over only once it lapsed more than ``grace`` ago. Returns ``None`` on success, else
    the current holder (the caller waits or reports it).
    """
    with bounded_transaction(engine, idle=lease, lock_wait=lease) as conn:
        now = database_now(conn)
        row = conn.execute(sa.select(qbo_push_locks).where(c.realm_id == realm_id).with_for_update()).first()
        if row is None:
            try:
                with conn.begin_nested():
                    conn.execute(
                        sa.insert(qbo_push_locks).values(
                            realm_id=realm_id,
                            owner=owner,
                            organization_id=organization_id,
                            acquired_at=now,
                            expires_at=now + lease,
                        )
                    )
                return None
            except sa.exc.IntegrityError:  # another process inserted it first
                row = conn.execute(
                    sa.select(qbo_push_locks).where(c.realm_id == realm_id).with_for_update()
                ).one()
        if row.owner != owner and row.expires_at + grace > now:
            return _holder(row)
        conn.execute(
            sa.update(qbo_push_locks)
            .where(c.realm_id == realm_id)
            .values(
                owner=owner,
                organization_id=organization_id,
                acquired_at=row.acquired_at if row.owner == owner else now,
                expires_at=now + lease,
            )
        )
        return None


def renew(engine: Engine, realm_id: str, owner: str, lease: timedelta) -> bool:
    """Extend ``owner``'s lease; False when it no longer holds a live lock (lapsed or taken over)."""
    with bounded_transaction(engine, idle=lease, lock_wait=lease) as conn:
        now = database_now(conn)
        return bool(
            conn.execute(
                sa.update(qbo_push_locks)
                .where(c.realm_id == realm_id, c.owner == owner, c.expires_at > now)
                .values(expires_at=now + lease)
            ).rowcount
        )


def remaining(conn: Connection, realm_id: str, owner: str, *, hold: bool = False) -> timedelta | None:
    """How much lease ``owner`` has left (``None`` when it does not hold the lock), inside the caller's transaction.

    ``hold``: the row stays locked (``FOR UPDATE``) until the caller's transaction ends, so a write-back that checked
    it last commits before anyone can take the lock over. That hold is bounded by the lease: on PostgreSQL the
    session is ended (and the transaction rolled back) when it sits idle in the transaction for longer than the lease
    it has left — a holder frozen before its COMMIT (SIGSTOP, a pause) cannot keep the company past its lease.
    """
    query = sa.select(c.owner, c.expires_at).where(c.realm_id == realm_id)
    row = conn.execute(query.with_for_update() if hold else query).first()
    if row is None or row.owner != owner:
        return None
    left = row.expires_at - database_now(conn)
    if left <= timedelta(0):
        return None
    if hold:
        bound_transaction(conn, idle=left)
    return left


def release(engine: Engine, realm_id: str, owner: str) -> None:
    """Give the lock back (only ``owner``'s own)."""
    with bounded_transaction(engine, idle=SHORT_TRANSACTION, lock_wait=SHORT_TRANSACTION) as conn:
        conn.execute(sa.delete(qbo_push_locks).where(c.realm_id == realm_id, c.owner == owner))


def holder_and_live(engine: Engine, realm_id: str) -> tuple[LockHolder, bool] | None:
    """The lock's current row and whether its lease is still running by the database's clock (``None``: no row).

    A holder whose lease ran out stopped renewing it: its process is gone (or frozen past its lease).
    """
    with engine.connect() as conn:
        return holder_in(conn, realm_id)


def holder_in(conn: Connection, realm_id: str) -> tuple[LockHolder, bool] | None:
    """:func:`holder_and_live` inside the caller's transaction."""
    row = conn.execute(sa.select(qbo_push_locks).where(c.realm_id == realm_id)).first()
    if row is None:
        return None
    return _holder(row), row.expires_at > database_now(conn)
