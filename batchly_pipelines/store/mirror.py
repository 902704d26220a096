"""``qbo_mirror``: what was pulled from QuickBooks, and ``qbo_reconciled``: which mirror version Batchly last took in.

The pull writes a mirror row only when QuickBooks has a new version of it (another SyncToken, or a deletion), so
``pulled_at`` says when the mirror last learnt something new. Every write gives the row a new ``version`` (a random
token, compared for equality only: no clock is involved), which the reconciliations record
(``invoices.payment_mirror_version``, ``qbo_reconciled``) to know which version they have seen.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batchly_pipelines.store.lookup import among
from batchly_pipelines.store.schema import qbo_mirror, qbo_reconciled, utcnow
from batchly_pipelines.store.upsert import bulk_upsert, insert_if_new, upsert_keys

m, rc = qbo_mirror.c, qbo_reconciled.c
_KEY = ("organization_id", "entity_type", "qbo_id")  # both tables' primary key


def new_version() -> str:
    """A fresh ``qbo_mirror.version``: unique per write, so equal versions mean the same write."""
    return uuid.uuid4().hex


def new_versions(count: int) -> list[str]:
    """``count`` fresh versions at once (as random as :func:`new_version`, one call to the system's random source
    instead of one per row)."""
    raw = os.urandom(16 * count).hex()
    return [raw[32 * n : 32 * (n + 1)] for n in range(count)]


def live_tokens(conn: Connection, organization_id: int, entity: str, ids: Sequence[str]) -> dict[str, str]:
    """The SyncToken of each of ``ids`` the mirror holds live (not deleted)."""
    return dict(
        conn.execute(
            sa.select(m.qbo_id, m.sync_token).where(
                m.organization_id == organization_id,
                m.entity_type == entity,
                m.deleted.is_(False),
                m.qbo_id.in_(ids),
            )
        ).all()
    )


def _version_number(token: Any) -> sa.ColumnElement[int]:
    """A SyncToken column as the number it is (QuickBooks counts versions up from 0); NULL for a tombstone's empty
    token (never cast: PostgreSQL refuses ``''::bigint`` and may evaluate a condition in any order)."""
    return sa.case((token == "", sa.null()), else_=sa.cast(token, sa.BigInteger))


def write_versions(
    conn: Connection,
    organization_id: int,
    entity: str,
    objects: Iterable[tuple[Mapping[str, Any], datetime]],
    *,
    force: bool = False,
) -> dict[str, str]:
    """Write each ``(object, its LastUpdatedTime)`` as the live mirror row of that object, with a new version — only
    where the mirror holds nothing of it or an older SyncToken (with ``force`` also the same one; a deletion is only
    replaced by a newer version, a tombstone never), decided in the write itself, so a slower read landing last
    never puts an older version back. Returns the ids written, each with the version it was written at."""

    def newer(offered: Any) -> sa.ColumnElement[bool]:
        stored = _version_number(qbo_mirror.c.sync_token)
        same_or_newer = _version_number(offered.sync_token) >= stored
        strictly_newer = _version_number(offered.sync_token) > stored
        live_and_not_older = sa.and_(qbo_mirror.c.deleted.is_(False), same_or_newer)
        return sa.and_(
            qbo_mirror.c.sync_token != "",  # a tombstone: QuickBooks never brings back what it deleted
            sa.or_(strictly_newer, live_and_not_older) if force else strictly_newer,
        )

    now = utcnow()
    objects = list(objects)
    rows = [
        {
            "organization_id": organization_id,
            "entity_type": entity,
            "qbo_id": obj["Id"],
            "sync_token": obj["SyncToken"],
            "last_updated_time": last_updated,
            "deleted": False,
            "data": obj,  # amounts (Decimals) written as JSON numbers: store.db.dumps_json
            "pulled_at": now,
            "version": version,
        }
        for (obj, last_updated), version in zip(objects, new_versions(len(objects)), strict=True)
    ]
    # where one id comes twice, the later row is written (store.upsert): its version is the one returned
    offered = {row["qbo_id"]: row["version"] for row in rows}
    if insert_if_new(conn, qbo_mirror, rows, key=_KEY):  # an import's page: none of it mirrored yet
        return offered
    written = upsert_keys(conn, qbo_mirror, rows, key=_KEY, only_if=newer)
    return {qbo_id: offered[qbo_id] for _, _, qbo_id in written}


def mark_deleted(
    conn: Connection, organization_id: int, entity: str, when: Mapping[str, datetime]
) -> list[dict[str, Any]]:
    """Record the objects QuickBooks deleted (id → when it deleted them), mirrored or not: a live mirror row is
    flagged deleted, an id the mirror never held gets a tombstone row (``{"Id", "status": "Deleted"}``), one already
    flagged is left alone. Returns the last known data of each newly recorded deletion (the tombstone itself for an
    id never mirrored)."""
    if not when:
        return []
    known = {
        qbo_id: (deleted, data)
        for qbo_id, deleted, data in conn.execute(
            sa.select(m.qbo_id, m.deleted, m.data).where(
                m.organization_id == organization_id, m.entity_type == entity, m.qbo_id.in_(list(when))
            )
        ).all()
    }
    live = [(qbo_id, data) for qbo_id, (deleted, data) in known.items() if not deleted]
    if live:
        conn.execute(
            sa.update(qbo_mirror)
            .where(
                m.organization_id == organization_id,
                m.entity_type == entity,
                m.qbo_id == sa.bindparam("b_qbo_id"),
            )
            .values(
                deleted=True,
                last_updated_time=sa.bindparam("b_when"),
                pulled_at=utcnow(),
                version=sa.bindparam("b_version"),
            ),
            [{"b_qbo_id": qbo_id, "b_when": when[qbo_id], "b_version": new_version()} for qbo_id, _ in live],
        )
    tombstones = [_tombstone(qbo_id, when[qbo_id]) for qbo_id in sorted(set(when) - set(known))]
    if tombstones:
        now = utcnow()
        conn.execute(
            sa.insert(qbo_mirror),
            [
                {
                    "organization_id": organization_id,
                    "entity_type": entity,
                    "qbo_id": tombstone["Id"],
                    "sync_token": "",
                    "last_updated_time": when[tombstone["Id"]],
                    "deleted": True,
                    "data": tombstone,
                    "pulled_at": now,
                    "version": new_version(),
                }
                for tombstone in tombstones
            ],
        )
    return [dict(data) for _, data in live] + tombstones


def _tombstone(qbo_id: str, when: datetime) -> dict[str, Any]:
    """What the mirror keeps of an object deleted before it was ever mirrored (CDC's deletion entry)."""
    return {"Id": qbo_id, "status": "Deleted", "MetaData": {"LastUpdatedTime": when.isoformat()}}


def live_ids(conn: Connection, organization_id: int, entity: str) -> list[str]:
    """The ids of every live (not deleted) mirrored object of ``entity``."""
    query = sa.select(m.qbo_id).where(
        m.organization_id == organization_id, m.entity_type == entity, m.deleted.is_(False)
    )
    return list(conn.execute(query.order_by(m.qbo_id)).scalars())


def not_mirrored(conn: Connection, organization_id: int, entity: str, ids: set[str]) -> list[str]:
    """The ``ids`` the mirror has no row of (live or deleted), sorted."""
    known = set(
        conn.execute(
            sa.select(m.qbo_id).where(
                m.organization_id == organization_id, m.entity_type == entity, m.qbo_id.in_(sorted(ids))
            )
        ).scalars()
    )
    return sorted(ids - known)


def mirrored_data(conn: Connection, organization_id: int, entity: str, qbo_id: str) -> Any:
    """The mirrored data of one QuickBooks object (it must be mirrored)."""
    return conn.execute(
        sa.select(m.data).where(
            m.organization_id == organization_id, m.entity_type == entity, m.qbo_id == qbo_id
        )
    ).scalar_one()


def mirrored_payments(
    conn: Connection, organization_id: int, ids: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """Mirrored live payments by id."""
    return mirrored_objects(conn, organization_id, "Payment", ids)


def mirrored_objects(
    conn: Connection, organization_id: int, entity: str, ids: Iterable[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Mirrored live objects of ``entity`` by id: those of ``ids``, or all of them when ``ids`` is None."""
    query = sa.select(m.qbo_id, m.data).where(
        m.organization_id == organization_id, m.entity_type == entity, m.deleted.is_(False)
    )
    if ids is not None:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        query = query.where(m.qbo_id.in_(wanted))
    return {qbo_id: dict(data) for qbo_id, data in conn.execute(query).all()}


def unreconciled_ids(
    conn: Connection, organization_id: int, entity: str, after: str, limit: int
) -> tuple[list[str], str | None]:
    """Of the next ``limit`` mirror rows after ``after`` (by ``qbo_id``, the mirror's primary key order), the ids
    whose version is not the one they were last reconciled at (never reconciled ones included), and the last id
    looked at (None when no row is left). Two range scans of primary keys, compared here: the cost is linear in
    the rows whatever the planner thinks of a join of two freshly filled tables."""
    scanned = conn.execute(
        sa.select(m.qbo_id, m.version)
        .where(m.organization_id == organization_id, m.entity_type == entity, m.qbo_id > after)
        .order_by(m.qbo_id)
        .limit(limit)
    ).all()
    if not scanned:
        return [], None
    last = scanned[-1][0]
    recorded = dict(
        conn.execute(
            sa.select(rc.qbo_id, rc.mirror_version).where(
                rc.organization_id == organization_id,
                rc.entity_type == entity,
                rc.qbo_id > after,
                rc.qbo_id <= last,
            )
        ).all()
    )
    return [qbo_id for qbo_id, version in scanned if recorded.get(qbo_id) != version], last


def unreconciled_estimate(conn: Connection, organization_id: int, entity: str) -> int:
    """About how many mirror rows of ``entity`` wait for reconciliation: mirror rows less reconciled ones (exact
    for a first import; rows re-mirrored since are not counted)."""

    def count(table: sa.Table) -> int:
        c = table.c
        query = sa.select(sa.func.count()).where(
            c.organization_id == organization_id, c.entity_type == entity
        )
        return int(conn.execute(query.select_from(table)).scalar_one())

    return max(0, count(qbo_mirror) - count(qbo_reconciled))


def mirror_rows(
    conn: Connection, organization_id: int, entity: str, ids: Sequence[str], *, data: bool = True
) -> list[dict[str, Any]]:
    """The mirror rows of ``ids`` (``qbo_id``, ``sync_token``, ``last_updated_time``, ``deleted``, ``data``,
    ``version``), in ``qbo_id`` order; without ``data`` when it is False (the caller holds it)."""
    if not ids:
        return []
    columns = [m.qbo_id, m.sync_token, m.last_updated_time, m.deleted, m.version]
    # the JSON as text, decoded here (see _loads) rather than by the driver's json.loads
    text = sa.cast(m.data, sa.Text).label("data")
    query = (
        sa.select(*columns, *([text] if data else []))
        .where(m.organization_id == organization_id, m.entity_type == entity, among(conn, m.qbo_id, ids))
        .order_by(m.qbo_id)
    )
    rows = [dict(r) for r in conn.execute(query).mappings()]
    if data:
        for row in rows:
            row["data"] = _loads(row["data"])
    return rows


_DATA = msgspec.json.Decoder()


def _loads(text: str) -> Any:
    """A mirror row's JSON, read as ``json.loads`` reads it (amounts as floats, as the driver hands JSON columns
    back) in about a fifth of its time; what msgspec refuses (an escaped unpaired surrogate, which SQLite keeps) is
    read by ``json``."""
    try:
        return _DATA.decode(text)
    except msgspec.DecodeError:
        return json.loads(text)


def record_reconciled(
    conn: Connection, organization_id: int, entity: str, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Record the mirror version (``version``) each row (``qbo_id``) was reconciled at, in the caller's
    transaction."""
    recorded = [
        {
            "organization_id": organization_id,
            "entity_type": entity,
            "qbo_id": row["qbo_id"],
            "mirror_version": row["version"],
        }
        for row in rows
    ]
    if not insert_if_new(conn, qbo_reconciled, recorded, key=_KEY):  # an import's rows: none recorded yet
        bulk_upsert(conn, qbo_reconciled, recorded, key=_KEY)
