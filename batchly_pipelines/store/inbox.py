"""The webhook inbox ``qbo_webhook_events``: every event Intuit delivered, stored once, until a pull took it in.

The receiver records each delivery in one transaction (``INSERT … ON CONFLICT (event_id) DO NOTHING``, so a replayed
delivery or an event sent twice is stored once). The sensor reads the pending events per realm; the targeted pull run
claims a realm's pending events with its run id when it starts (every event that arrived since the last run) and
settles the events it claimed — ``done`` — only after its own writes were committed. A run that fails leaves its
events pending: the next run claims them again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from batchly_pipelines.store.schema import qbo_connections, qbo_webhook_events, utcnow

e, c = qbo_webhook_events.c, qbo_connections.c

EVENT_COLUMNS = ("event_id", "realm_id", "entity_type", "entity_id", "operation", "event_time")


def realms_with_connection(conn: Connection, realm_ids: Iterable[str]) -> set[str]:
    """The realms among ``realm_ids`` some organisation has a QuickBooks connection row with (whatever its status:
    a connection waiting for re-authorisation still wants its events)."""
    wanted = sorted(set(realm_ids))
    if not wanted:
        return set()
    return set(conn.execute(sa.select(c.realm_id).where(c.realm_id.in_(wanted)).distinct()).scalars())


def organizations_connected_to(conn: Connection, realm_id: str) -> list[int]:
    """The organisations whose connection to ``realm_id`` is ``connected``, by id."""
    return list(
        conn.execute(
            sa.select(c.organization_id)
            .where(c.realm_id == realm_id, c.status == "connected")
            .distinct()
            .order_by(c.organization_id)
        ).scalars()
    )


def record_events(conn: Connection, rows: Sequence[Mapping[str, Any]], received_at: datetime) -> set[str]:
    """Insert events (``EVENT_COLUMNS`` plus ``status`` and ``note``) whose ``event_id`` is new; returns the ids
    inserted. Ids already stored — or repeated in ``rows`` — are left as they are."""
    if not rows:
        return set()
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(qbo_webhook_events).on_conflict_do_nothing(index_elements=["event_id"]).returning(e.event_id)
    )
    unique = {row["event_id"]: row for row in rows}
    values = [
        {**{name: row[name] for name in EVENT_COLUMNS}, "status": row["status"], "note": row.get("note")}
        | {"received_at": received_at, "processed_at": received_at if row["status"] != "pending" else None}
        for row in unique.values()
    ]
    return set(conn.execute(statement, values).scalars())


def pending_by_realm(engine: Engine) -> dict[str, tuple[int, int]]:
    """Per realm with an organisation ``connected`` to it: how many events are pending and the newest one's id."""
    connected = sa.select(c.realm_id).where(c.status == "connected")
    query = (
        sa.select(e.realm_id, sa.func.count(), sa.func.max(e.id))
        .where(e.status == "pending", e.realm_id.in_(connected))
        .group_by(e.realm_id)
    )
    with engine.connect() as conn:
        return {realm: (count, newest) for realm, count, newest in conn.execute(query)}


def claim_events(conn: Connection, realm_id: str, run_id: str, limit: int) -> list[dict[str, Any]]:
    """Claim the oldest ``limit`` pending events of ``realm_id`` for ``run_id`` (taking them over from a run that
    failed), and return the run's pending events, oldest first."""
    oldest = (
        sa.select(e.id)
        .where(e.realm_id == realm_id, e.status == "pending")
        .order_by(e.id)
        .limit(limit)
        .scalar_subquery()
    )
    conn.execute(sa.update(qbo_webhook_events).where(e.id.in_(oldest)).values(run_id=run_id))
    return claimed_events(conn, run_id)


def claimed_events(conn: Connection, run_id: str) -> list[dict[str, Any]]:
    """The pending events ``run_id`` claimed, oldest first."""
    query = (
        sa.select(e.id, *(e[name] for name in EVENT_COLUMNS))
        .where(e.run_id == run_id, e.status == "pending")
        .order_by(e.id)
    )
    return [dict(row) for row in conn.execute(query).mappings()]


def settle_events(conn: Connection, run_id: str, status: str, note: str | None = None) -> int:
    """Mark the pending events ``run_id`` claimed ``done`` or ``ignored``; returns how many. Events another run
    claimed since are not touched."""
    if status not in ("done", "ignored"):
        raise ValueError(f"an event is settled as done or ignored, not {status!r}")
    return conn.execute(
        sa.update(qbo_webhook_events)
        .where(e.run_id == run_id, e.status == "pending")
        .values(status=status, note=note, processed_at=utcnow())
    ).rowcount


def inbox_events(
    conn: Connection,
    *,
    realm_id: str | None = None,
    status: str | None = None,
    limit: int = 1000,
    newest_first: bool = False,
) -> list[dict[str, Any]]:
    """Inbox rows, oldest (or newest) first, optionally of one realm and one status."""
    query = sa.select(qbo_webhook_events).order_by(e.id.desc() if newest_first else e.id).limit(limit)
    if realm_id is not None:
        query = query.where(e.realm_id == realm_id)
    if status is not None:
        query = query.where(e.status == status)
    return [dict(row) for row in conn.execute(query).mappings()]
