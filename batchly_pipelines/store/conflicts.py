"""Field-level merge conflicts: recorded by the pull, reviewed and resolved by people."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batchly_pipelines.store.lookup import among
from batchly_pipelines.store.schema import sync_conflicts, utcnow

c = sync_conflicts.c

RESOLUTIONS = ("pending_review", "batchly", "quickbooks", "value")


@dataclass(frozen=True)
class ConflictRecord:
    """A field changed on both sides since the base, with the three values and the automatic outcome."""

    organization_id: int
    entity_type: str
    entity_id: int | None
    qbo_id: str | None
    field: str
    base_value: Any
    batchly_value: Any
    qbo_value: Any
    resolution: str  # pending_review when policy sends it to a person; else who won automatically
    batchly_updated_at: datetime | None = None
    qbo_updated_at: datetime | None = None
    run_id: str | None = None
    reason: str | None = (
        None  # both_changed | first_link | owned_field (rules.merge.ConflictReason); link: none
    )


def record_conflicts(conn: Connection, conflicts: Iterable[ConflictRecord]) -> int:
    """Insert conflict rows in the caller's transaction. Returns how many were inserted.

    A review (``pending_review``) of a record and field that already waits for one is not inserted again: the open
    row is refreshed with the values and times seen now (its next ``revision`` when the values differ), so a
    reviewer always sees the current values."""
    rows = [
        {
            **vars(conflict),
            "base_value": _jsonable(conflict.base_value),
            "batchly_value": _jsonable(conflict.batchly_value),
            "qbo_value": _jsonable(conflict.qbo_value),
            "detected_at": utcnow(),
        }
        for conflict in conflicts
    ]
    for row in rows:
        if row["resolution"] not in RESOLUTIONS:
            raise ValueError(
                f"conflict on {row['entity_type']}.{row['field']}: unknown resolution {row['resolution']!r}"
            )
    fresh = []
    for row in rows:
        if row["resolution"] == "pending_review" and _refresh_open(conn, row):
            continue
        fresh.append(row)
    if fresh:
        conn.execute(sa.insert(sync_conflicts), fresh)
    return len(fresh)


def _refresh_open(conn: Connection, row: dict[str, Any]) -> bool:
    """Update the open review of ``row``'s record and field with ``row``'s values (a new revision when they differ
    from the ones shown); False when there is none."""
    record = c.entity_id == row["entity_id"] if row["entity_id"] is not None else c.qbo_id == row["qbo_id"]
    found = conn.execute(
        sa.select(c.id, c.batchly_value, c.qbo_value).where(
            c.organization_id == row["organization_id"],
            c.entity_type == row["entity_type"],
            c.field == row["field"],
            c.resolution == "pending_review",
            record,
        )
    ).first()
    if found is None:
        return False
    seen: dict[str, Any] = {
        key: row[key] for key in ("batchly_updated_at", "qbo_updated_at", "run_id") if row[key] is not None
    }
    if (found.batchly_value, found.qbo_value) != (row["batchly_value"], row["qbo_value"]):
        seen.update(batchly_value=row["batchly_value"], qbo_value=row["qbo_value"], revision=c.revision + 1)
    if row["entity_id"] is not None and row["qbo_id"] is not None:
        seen["qbo_id"] = row["qbo_id"]
    if seen:
        conn.execute(sa.update(sync_conflicts).where(c.id == found.id).values(**seen))
    return True


def list_conflicts(
    conn: Connection,
    *,
    organization_id: int | None = None,
    open_only: bool = True,
    entity_type: str | None = None,
    field: str | None = None,
    ids: Iterable[int] | None = None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    """Conflict rows, oldest first; ``open_only`` keeps the ones waiting for review."""
    query = sa.select(sync_conflicts).order_by(c.id).limit(limit)
    if organization_id is not None:
        query = query.where(c.organization_id == organization_id)
    if open_only:
        query = query.where(c.resolution == "pending_review")
    if entity_type is not None:
        query = query.where(c.entity_type == entity_type)
    if field is not None:
        query = query.where(c.field == field)
    if ids is not None:
        query = query.where(c.id.in_(list(ids)))
    return [dict(r) for r in conn.execute(query).mappings()]


def open_conflict_fields(
    conn: Connection, organization_id: int | Sequence[int], entity_type: str
) -> dict[int, set[str]]:
    """Fields awaiting review per record of ``entity_type``: a push leaves them alone until a person decides. Of one
    organisation, or of several in one statement (record ids are unique across organisations)."""
    orgs = [organization_id] if isinstance(organization_id, int) else list(organization_id)
    query = sa.select(c.entity_id, c.field).where(
        among(conn, c.organization_id, orgs), c.entity_type == entity_type, c.resolution == "pending_review"
    )
    held: dict[int, set[str]] = {}
    for entity_id, name in conn.execute(query):
        held.setdefault(entity_id, set()).add(name)
    return held


def open_reviews(
    conn: Connection, organization_id: int, entity_type: str, entity_ids: Iterable[int]
) -> dict[int, dict[str, int]]:
    """Open reviews of these records of ``entity_type``: record id → field → conflict id."""
    query = sa.select(c.entity_id, c.field, c.id).where(
        c.organization_id == organization_id,
        c.entity_type == entity_type,
        c.resolution == "pending_review",
        c.entity_id.in_(sorted(entity_ids)),
    )
    fields: dict[int, dict[str, int]] = {}
    for entity_id, name, conflict_id in conn.execute(query).all():
        fields.setdefault(entity_id, {})[name] = conflict_id
    return fields


def open_reviews_of_qbo_ids(
    conn: Connection, organization_id: int, entity_type: str, field: str, qbo_ids: Iterable[str]
) -> set[str]:
    """Which of ``qbo_ids`` have an open review of ``field``."""
    query = sa.select(c.qbo_id).where(
        c.organization_id == organization_id,
        c.entity_type == entity_type,
        c.field == field,
        c.resolution == "pending_review",
        c.qbo_id.in_(list(qbo_ids)),
    )
    return set(conn.execute(query).scalars())


def refresh_review(conn: Connection, conflict_id: int, *, batchly_value: Any, qbo_value: Any) -> bool:
    """Show the current values in an open review, as its next revision (a decision on the old ones is refused).
    False if it is not open."""
    updated = conn.execute(
        sa.update(sync_conflicts)
        .where(c.id == conflict_id, c.resolution == "pending_review")
        .values(
            batchly_value=_jsonable(batchly_value), qbo_value=_jsonable(qbo_value), revision=c.revision + 1
        )
    ).rowcount
    return bool(updated)


def count_open(conn: Connection, organization_id: int) -> dict[str, int]:
    """Conflicts waiting for review, counted per entity type."""
    rows = conn.execute(
        sa.select(c.entity_type, sa.func.count())
        .where(c.organization_id == organization_id, c.resolution == "pending_review")
        .group_by(c.entity_type)
    ).all()
    return {entity: count for entity, count in rows}


def mark_resolved(
    conn: Connection,
    conflict_id: int,
    *,
    winner: str,
    resolved_by: str,
    value: Any = None,
    revision: int | None = None,
) -> bool:
    """Record who resolved an open conflict and how. Returns False if it was not open (already resolved) or, with
    ``revision``, no longer at that revision (its values changed since they were read)."""
    if winner not in RESOLUTIONS[1:]:
        raise ValueError(
            f"conflict {conflict_id}: winner must be batchly, quickbooks or value, not {winner!r}"
        )
    if not resolved_by:
        raise ValueError(f"conflict {conflict_id}: resolved_by is required")
    query = sa.update(sync_conflicts).where(c.id == conflict_id, c.resolution == "pending_review")
    if revision is not None:
        query = query.where(c.revision == revision)
    updated = conn.execute(
        query.values(
            resolution=winner, resolved_value=_jsonable(value), resolved_by=resolved_by, resolved_at=utcnow()
        )
    ).rowcount
    return bool(updated)


def _jsonable(value: Any) -> Any:
    """Values as JSON can hold them: Decimal and dates become strings, so nothing loses precision."""
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)
