"""Links between Batchly records and their QuickBooks twins, with the merge base, and the per-record sync log.

``qbo_sync_state`` holds, per linked record, the QuickBooks id, the SyncToken last seen and the *base*: the state of
the synced fields both sides last agreed on (encoded with ``sync.mapping.encode_snapshot``). Pull and push both read
and move it; it only ever moves after a successful sync, in the same transaction as the write it describes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batchly_pipelines.store.lookup import among
from batchly_pipelines.store.schema import qbo_sync_state, sync_log, utcnow
from batchly_pipelines.store.upsert import bulk_insert, bulk_upsert

st = qbo_sync_state.c


@dataclass(frozen=True)
class SyncState:
    """One linked record: which QuickBooks object it is, at which SyncToken, and the agreed base."""

    organization_id: int
    entity_type: str  # customer | item | invoice
    entity_id: int
    qbo_id: str
    sync_token: str
    base: Mapping[str, Any]
    qbo_updated_at: datetime | None = None


def load_states(
    conn: Connection,
    organization_id: int,
    entity_type: str,
    *,
    entity_ids: Iterable[int] | None = None,
    qbo_ids: Iterable[str] | None = None,
) -> list[SyncState]:
    """Links of ``entity_type`` in an organisation, optionally only for the given Batchly or QuickBooks ids."""
    query = sa.select(qbo_sync_state).where(
        st.organization_id == organization_id, st.entity_type == entity_type
    )
    if entity_ids is not None:
        query = query.where(st.entity_id.in_(list(entity_ids)))
    if qbo_ids is not None:
        query = query.where(among(conn, st.qbo_id, qbo_ids))
    return [
        SyncState(
            organization_id=row["organization_id"],
            entity_type=row["entity_type"],
            entity_id=row["entity_id"],
            qbo_id=row["qbo_id"],
            sync_token=row["sync_token"],
            base=row["base"],
            qbo_updated_at=row["qbo_updated_at"],
        )
        for row in conn.execute(query.order_by(st.id)).mappings()
    ]


def save_states(conn: Connection, states: Iterable[SyncState]) -> int:
    """Create or move links (by organisation, entity type and Batchly id) in the caller's transaction."""
    now = utcnow()
    rows = [{**_fields(state), "base": dict(state.base), "last_synced_at": now} for state in states]
    return bulk_upsert(conn, qbo_sync_state, rows, key=("organization_id", "entity_type", "entity_id"))


def insert_states(conn: Connection, states: Sequence[SyncState]) -> int:
    """Create the links of records that have none yet (records just created), in the caller's transaction: a plain
    bulk insert (COPY on PostgreSQL), where :func:`save_states` would stage the rows to upsert them."""
    now = utcnow()
    rows = [{**_fields(state), "base": dict(state.base), "last_synced_at": now} for state in states]
    bulk_insert(conn, qbo_sync_state, rows)
    return len(states)


@dataclass(frozen=True)
class LogEntry:
    """The outcome of one sync action on one record."""

    organization_id: int
    direction: str  # pull | push
    entity_type: str
    action: str  # create | update | void | link | skip | deactivate | …
    outcome: str  # ok | error
    entity_id: int | None = None
    qbo_id: str | None = None
    message: str | None = None
    run_id: str | None = None


def write_log(conn: Connection, entries: Iterable[LogEntry]) -> int:
    """Append entries to ``sync_log`` in the caller's transaction."""
    now = utcnow()
    rows = [{**_fields(entry), "created_at": now} for entry in entries]
    bulk_insert(conn, sync_log, rows)
    return len(rows)


def _fields(record: SyncState | LogEntry) -> dict[str, Any]:
    """A dataclass's fields, shallow (``asdict`` deep-copies every base, which dominates large pulls)."""
    return dict(vars(record))  # a dataclass's instance dict holds exactly its fields
