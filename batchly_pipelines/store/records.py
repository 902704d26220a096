"""Batchly customers and items as the pull reads them and writes their sync-owned columns (``qbo_id``, synced
fields). A pull write leaves ``updated_at`` alone: it keeps meaning "last changed in Batchly".

Rows by id are :func:`batchly_pipelines.store.push_rows.load_rows`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batchly_pipelines.rules.name_lists import NameList
from batchly_pipelines.rules.storage import ColumnRule
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.lookup import among
from batchly_pipelines.store.push_rows import TABLES
from batchly_pipelines.store.upsert import COPY_FROM_ROWS, bulk_insert

m, st = s.qbo_mirror.c, s.qbo_sync_state.c


def unlinked_rows(conn: Connection, entity_type: str, organization_id: int) -> Iterator[dict[str, Any]]:
    """The organisation's rows of ``entity_type`` without a QuickBooks twin, streamed (read them while ``conn`` is
    open)."""
    t = TABLES[entity_type]
    query = sa.select(t).where(t.c.organization_id == organization_id, t.c.qbo_id.is_(None))
    return (dict(row) for row in conn.execute(query).mappings())


def twins(
    conn: Connection, entity_type: str, organization_id: int, qbo_ids: Sequence[str], *, lock: bool = False
) -> dict[str, tuple[int, bool]]:
    """The Batchly rows linked to these QuickBooks ids: QuickBooks id → (Batchly id, ``is_active``); with ``lock``
    the rows stay locked (``FOR UPDATE``, in id order) until the caller's transaction ends."""
    t = TABLES[entity_type].c
    query = sa.select(t.qbo_id, t.id, t.is_active).where(
        t.organization_id == organization_id, among(conn, t.qbo_id, qbo_ids)
    )
    if lock:
        query = query.order_by(t.id).with_for_update(of=TABLES[entity_type])
    return {qbo_id: (entity_id, active) for qbo_id, entity_id, active in conn.execute(query).all()}


def lock_rows(conn: Connection, entity_type: str, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Batchly rows of ``entity_type`` by id (missing ids are left out), locked until the caller's transaction ends
    (``SELECT … FOR UPDATE`` in id order on PostgreSQL; SQLite's transactions hold the whole database already): an
    app edit that comes meanwhile waits, then lands on top of what the caller wrote, never under it."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    table = TABLES[entity_type]
    query = sa.select(table).where(table.c.id.in_(wanted)).order_by(table.c.id).with_for_update()
    return {row["id"]: dict(row) for row in conn.execute(query).mappings()}


def insert_records(
    conn: Connection, entity_type: str, organization_id: int, records: Sequence[tuple[str, Mapping[str, Any]]]
) -> list[tuple[int, str]]:
    """Create Batchly rows from ``(qbo_id, synced fields)`` pairs; returns ``(id, qbo_id)`` in the same order."""
    if not records:
        return []
    t = TABLES[entity_type]
    if conn.dialect.name == "postgresql" and len(records) >= COPY_FROM_ROWS:
        # the ids drawn first, in order, so the rows go by COPY and nothing is read back
        column = t.c.id
        sequence = sa.func.pg_get_serial_sequence(t.name, column.name)
        drawn = sa.select(sa.func.nextval(sequence)).select_from(sa.func.generate_series(1, len(records)))
        drawn_ids = [int(entity_id) for entity_id in conn.execute(drawn).scalars()]
        bulk_insert(
            conn,
            t,
            [
                {"id": entity_id, "organization_id": organization_id, "qbo_id": qbo_id, **fields}
                for entity_id, (qbo_id, fields) in zip(drawn_ids, records, strict=True)
            ],
        )
        return [(entity_id, qbo_id) for entity_id, (qbo_id, _) in zip(drawn_ids, records, strict=True)]
    rows = [{"organization_id": organization_id, "qbo_id": qbo_id, **fields} for qbo_id, fields in records]
    bulk_insert(conn, t, rows)
    qbo_ids = [qbo_id for qbo_id, _ in records]
    query = sa.select(t.c.qbo_id, t.c.id).where(
        t.c.organization_id == organization_id, t.c.qbo_id.in_(qbo_ids)
    )
    ids = dict(conn.execute(query).all())
    return [(ids[qbo_id], qbo_id) for qbo_id in qbo_ids]


def write_fields(
    conn: Connection,
    entity_type: str,
    entity_id: int,
    changes: Mapping[str, Any],
    *,
    touch: Iterable[str] = (),
) -> None:
    """Write ``changes`` to one row and set each ``touch`` column to itself (an UPDATE of it that changes nothing,
    which the outbox sees), ``updated_at`` left alone."""
    t = TABLES[entity_type]
    values = {**changes, **{name: t.c[name] for name in touch}, "updated_at": t.c.updated_at}
    conn.execute(sa.update(t).where(t.c.id == entity_id).values(values))


def link_record(
    conn: Connection, entity_type: str, organization_id: int, entity_id: int, qbo_id: str
) -> bool:
    """Give an unlinked row of the organisation its QuickBooks id; False when there is no such unlinked row."""
    t = TABLES[entity_type]
    linked = conn.execute(
        sa.update(t)
        .where(t.c.id == entity_id, t.c.organization_id == organization_id, t.c.qbo_id.is_(None))
        .values(qbo_id=qbo_id, updated_at=t.c.updated_at)
    ).rowcount
    return bool(linked)


def reconciled_rows(
    conn: Connection, kind: NameList, organization_id: int | Sequence[int], after: int, limit: int
) -> list[dict[str, Any]]:
    """The next ``limit`` linked rows after id ``after`` whose link is at the SyncToken of their live mirror row,
    each with the link's ``base`` and the mirror's ``data`` — of one organisation, or of several at once (ids are
    unique across organisations: one keyset over all of them)."""
    table = TABLES[kind.entity_type]
    t = table.c
    query = (
        sa.select(table, st.base, m.data)
        .join(s.qbo_sync_state, sa.and_(st.entity_type == kind.entity_type, st.entity_id == t.id))
        .join(
            s.qbo_mirror,
            sa.and_(
                m.organization_id == t.organization_id,
                m.entity_type == kind.qbo_entity,
                m.qbo_id == st.qbo_id,
                m.sync_token == st.sync_token,
            ),
        )
        .where(_of(conn, t.organization_id, organization_id), m.deleted.is_(False), t.id > after)
        .order_by(t.id)
        .limit(limit)
    )
    return [dict(r) for r in conn.execute(query).mappings()]


def _of(conn: Connection, column: Any, organization_id: int | Sequence[int]) -> sa.ColumnElement[bool]:
    """``column`` is the organisation, or one of the organisations."""
    if isinstance(organization_id, int):
        return column == organization_id
    return among(conn, column, organization_id)


@cache
def column_rules(entity_type: str) -> dict[str, ColumnRule]:
    """What each column of the ``customer``, ``item`` or ``invoice`` table accepts (``rules.storage``; the schema
    does not change while the process runs: worked out once)."""
    return {column.name: _rule(column) for column in TABLES[entity_type].columns}


def _rule(column: sa.Column[Any]) -> ColumnRule:
    kind = column.type
    if isinstance(kind, sa.String):
        return ColumnRule("text", bool(column.nullable), length=kind.length)
    if isinstance(kind, sa.Numeric) and kind.precision is not None:
        return ColumnRule("number", bool(column.nullable), precision=kind.precision, scale=kind.scale)
    return ColumnRule("other", bool(column.nullable))
