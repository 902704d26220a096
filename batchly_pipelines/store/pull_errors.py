"""``pull_errors``: the QuickBooks records (and fields) the pull could not store in Batchly, while the problem lasts.

A record is listed when one of its values does not fit Batchly's columns (``rules.storage``); the pull stores
everything else and tries the record again each time, and storing it removes its rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batchly_pipelines.store.lookup import among
from batchly_pipelines.store.schema import pull_errors, utcnow
from batchly_pipelines.store.upsert import bulk_upsert

e = pull_errors.c
KEY = ("organization_id", "entity_type", "qbo_id", "field")


@dataclass(frozen=True)
class PullError:
    """One value of one QuickBooks record that Batchly cannot store."""

    organization_id: int
    entity_type: str  # QBO entity name: Customer, Item, Invoice
    qbo_id: str
    field: str
    message: str
    entity_id: int | None = None
    run_id: str | None = None


def record_errors(conn: Connection, errors: Sequence[PullError]) -> None:
    """List ``errors`` (a record and field already listed keeps its ``first_seen_at``), in the caller's
    transaction."""
    now = utcnow()
    bulk_upsert(
        conn,
        pull_errors,
        ({**vars(error), "first_seen_at": now, "last_seen_at": now} for error in errors),
        key=KEY,
        update=("message", "entity_id", "run_id", "last_seen_at"),
    )


def clear_errors(conn: Connection, organization_id: int, entity_type: str, qbo_ids: Iterable[str]) -> None:
    """Remove the listed errors of these records (they have been stored), in the caller's transaction."""
    ids = sorted(set(qbo_ids))
    if ids:
        conn.execute(
            sa.delete(pull_errors).where(
                e.organization_id == organization_id, e.entity_type == entity_type, among(conn, e.qbo_id, ids)
            )
        )


def open_errors(
    conn: Connection, organization_id: int, entity_type: str | None = None, *, limit: int = 500
) -> list[dict[str, Any]]:
    """The listed errors of an organisation (optionally of one entity), oldest first."""
    query = sa.select(pull_errors).where(e.organization_id == organization_id).order_by(e.id).limit(limit)
    if entity_type is not None:
        query = query.where(e.entity_type == entity_type)
    return [dict(row) for row in conn.execute(query).mappings()]


def errors_by_organization(
    conn: Connection, organization_ids: Sequence[int], entity_type: str, *, limit: int
) -> dict[int, tuple[int, list[dict[str, Any]]]]:
    """For each of ``organization_ids`` with listed errors of ``entity_type``: how many, and the oldest ``limit`` of
    them — two statements for all the organisations."""
    orgs = list(organization_ids)
    if not orgs:
        return {}
    where = sa.and_(among(conn, e.organization_id, orgs), e.entity_type == entity_type)
    grouped = sa.select(e.organization_id, sa.func.count()).where(where).group_by(e.organization_id)
    counts: dict[int, int] = {org: int(count) for org, count in conn.execute(grouped)}
    rank = sa.func.row_number().over(partition_by=e.organization_id, order_by=e.id).label("rank")
    ranked = sa.select(pull_errors, rank).where(where).subquery()
    listed: dict[int, list[dict[str, Any]]] = {}
    query = sa.select(*(ranked.c[col.name] for col in pull_errors.columns)).where(ranked.c.rank <= limit)
    for row in conn.execute(query.order_by(ranked.c.id)).mappings():
        listed.setdefault(row["organization_id"], []).append(dict(row))
    return {org: (int(count), listed.get(org, [])) for org, count in counts.items()}


def count_errors(conn: Connection, organization_id: int, entity_type: str) -> int:
    """How many values of the organisation's ``entity_type`` records are listed."""
    query = sa.select(sa.func.count()).where(
        e.organization_id == organization_id, e.entity_type == entity_type
    )
    return int(conn.execute(query).scalar_one())
