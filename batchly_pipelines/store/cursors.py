"""Named per-organisation cursors (high-water marks of incremental pulls)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batchly_pipelines.store.schema import sync_cursors, utcnow
from batchly_pipelines.store.upsert import bulk_upsert


def get_cursor(conn: Connection, organization_id: int, name: str) -> str | None:
    """The stored value of cursor ``name``, or None if it was never set."""
    return conn.execute(
        sa.select(sync_cursors.c.value).where(
            sync_cursors.c.organization_id == organization_id, sync_cursors.c.name == name
        )
    ).scalar()


def set_cursor(conn: Connection, organization_id: int, name: str, value: str) -> None:
    """Store ``value`` for cursor ``name`` (insert or replace) in the caller's transaction."""
    bulk_upsert(
        conn,
        sync_cursors,
        [{"organization_id": organization_id, "name": name, "value": value, "updated_at": utcnow()}],
        key=("organization_id", "name"),
    )
