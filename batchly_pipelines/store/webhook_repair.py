"""What the CDC repair of the webhooks needs to know: each realm's sweep (``qbo_webhook_realms``), each start of a
receiver (``qbo_webhook_receivers``), when each realm last sent an event, and which realms are connected."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from batchly_pipelines.store.schema import (
    qbo_connections,
    qbo_webhook_events,
    qbo_webhook_realms,
    qbo_webhook_receivers,
    utcnow,
)

r, c, e = qbo_webhook_realms.c, qbo_connections.c, qbo_webhook_events.c


@dataclass(frozen=True)
class RealmRepair:
    """A realm's last CDC sweep: every change up to ``repaired_until`` (QuickBooks' time) is in Batchly."""

    realm_id: str
    repaired_until: datetime
    swept_at: datetime
    gaps: int


def record_receiver_start(engine: Engine, address: str, now: datetime | None = None) -> None:
    """Note that a receiver started listening at ``address`` (the realms' next sweeps are due at once)."""
    with engine.begin() as conn:
        conn.execute(
            sa.insert(qbo_webhook_receivers).values(started_at=now or utcnow(), address=address[:255])
        )


def last_receiver_start(conn: Connection) -> datetime | None:
    """When a receiver last started, if ever."""
    return conn.execute(sa.select(sa.func.max(qbo_webhook_receivers.c.started_at))).scalar()


def connected_realms(conn: Connection) -> dict[str, datetime]:
    """Every realm an organisation is ``connected`` to, with when its oldest such connection was made."""
    query = (
        sa.select(c.realm_id, sa.func.min(c.created_at)).where(c.status == "connected").group_by(c.realm_id)
    )
    return {realm: since for realm, since in conn.execute(query)}


def realm_repairs(conn: Connection, realm_ids: Iterable[str] | None = None) -> dict[str, RealmRepair]:
    """The last sweep of each realm (of ``realm_ids``, or all) that was swept at least once."""
    query = sa.select(r.realm_id, r.repaired_until, r.swept_at, r.gaps)
    if realm_ids is not None:
        query = query.where(r.realm_id.in_(sorted(set(realm_ids))))
    return {row.realm_id: RealmRepair(*row) for row in conn.execute(query)}


def save_sweep(
    conn: Connection, realm_id: str, repaired_until: datetime, swept_at: datetime, gaps: int
) -> None:
    """Record a finished sweep; ``repaired_until`` never moves back (a slower, older sweep cannot undo a newer)."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    values = {"realm_id": realm_id, "repaired_until": repaired_until, "swept_at": swept_at, "gaps": gaps}
    statement = insert(qbo_webhook_realms).values(**values)
    newer = statement.excluded.repaired_until > qbo_webhook_realms.c.repaired_until
    statement = statement.on_conflict_do_update(
        index_elements=["realm_id"],
        set_={
            "repaired_until": sa.case((newer, statement.excluded.repaired_until), else_=r.repaired_until),
            "swept_at": statement.excluded.swept_at,
            "gaps": statement.excluded.gaps,
        },
    )
    conn.execute(statement)


def last_events_received(conn: Connection, realm_ids: Iterable[str]) -> dict[str, datetime]:
    """When the inbox last received an event of each of ``realm_ids`` (realms that never sent one are absent)."""
    wanted = sorted(set(realm_ids))
    if not wanted:
        return {}
    query = (
        sa.select(e.realm_id, sa.func.max(e.received_at)).where(e.realm_id.in_(wanted)).group_by(e.realm_id)
    )
    return {realm: when for realm, when in conn.execute(query)}
