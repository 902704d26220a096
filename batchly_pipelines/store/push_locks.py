"""The realm push lock: one push per QuickBooks company at a time, across processes, machines and entry points.

A push holds ``qbo_push_locks[realm]`` under a lease it renews while it works. Before every write to QuickBooks and in
every write-back to Batchly the holder proves it still holds the lock with enough lease left for the request to finish
(:func:`held`); a holder that lost it stops writing. A dead holder's lock lapses when its lease expires, so the realm is
free again within one lease without an operator.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchly_pipelines.store.schema import qbo_push_locks, utcnow

c = qbo_push_locks.c


@dataclass(frozen=True)
class LockHolder:
    """Who holds a realm's push lock, and until when."""

    realm_id: str
    owner: str
    organization_id: int
    acquired_at: datetime
    expires_at: datetime


def acquire(
    engine: Engine,
    realm_id: str,
    owner: str,
    organization_id: int,
    lease: timedelta,
    now: datetime | None = None,
) -> LockHolder | None:
    """Take the realm's lock for ``owner`` (or extend it if ``owner`` holds it already).

    Returns ``None`` on success, else the current live holder (the caller waits or reports it).
    """
    now = now or utcnow()
    with engine.begin() as conn:
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
        if row.owner != owner and row.expires_at > now:
            return LockHolder(row.realm_id, row.owner, row.organization_id, row.acquired_at, row.expires_at)
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


def renew(engine: Engine, realm_id: str, owner: str, lease: timedelta, now: datetime | None = None) -> bool:
    """Extend ``owner``'s lease; False when it no longer holds a live lock (expired or taken over)."""
    now = now or utcnow()
    with engine.begin() as conn:
        return bool(
            conn.execute(
                sa.update(qbo_push_locks)
                .where(c.realm_id == realm_id, c.owner == owner, c.expires_at > now)
                .values(expires_at=now + lease)
            ).rowcount
        )


def held(
    conn: Connection, realm_id: str, owner: str, margin: timedelta = timedelta(0), now: datetime | None = None
) -> bool:
    """Whether ``owner`` holds the lock with at least ``margin`` of lease left, inside the caller's transaction.

    The row is locked (``FOR UPDATE``) so a write-back that checked it commits before anyone can take the lock over.
    """
    now = now or utcnow()
    row = conn.execute(
        sa.select(c.owner, c.expires_at).where(c.realm_id == realm_id).with_for_update()
    ).first()
    return row is not None and row.owner == owner and row.expires_at > now + margin


def release(engine: Engine, realm_id: str, owner: str) -> None:
    """Give the lock back (only ``owner``'s own)."""
    with engine.begin() as conn:
        conn.execute(sa.delete(qbo_push_locks).where(c.realm_id == realm_id, c.owner == owner))


def holder(engine: Engine, realm_id: str) -> LockHolder | None:
    """The lock's current row, live or lapsed (for status and messages)."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(qbo_push_locks).where(c.realm_id == realm_id)).first()
    return (
        None
        if row is None
        else LockHolder(row.realm_id, row.owner, row.organization_id, row.acquired_at, row.expires_at)
    )
