"""What an operator looks at: per-organisation status (connection, queue depth) and the records behind each problem
— the dead letter, a run's failed records, open conflicts, unhealthy connections, due rows left waiting — each row
naming its record (an invoice's DocNumber, a customer's or item's name) and why. For the CLI and Dagster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchly_pipelines.store import schema as s
from batchly_pipelines.store.queue import SyncQueue, due_since, is_due
from batchly_pipelines.store.schema import utcnow

q = s.sync_queue.c
log = s.sync_log.c
# the column that names a record of each entity type (what an operator knows it by)
_NAME_COLUMNS: dict[str, sa.Column[Any]] = {
    "invoice": s.invoices.c.doc_number,
    "customer": s.customers.c.display_name,
    "item": s.items.c.name,
    "sales_order": s.sales_orders.c.order_number,
}


def organization_status(engine: Engine) -> list[dict[str, Any]]:
    """One row per organisation: id, name, ``quickbooks`` ("realm (status)" or "not connected") and a count per
    queue state."""
    depth = SyncQueue(engine).depth()
    with engine.connect() as conn:
        orgs = conn.execute(sa.select(s.organizations.c.id, s.organizations.c.name).order_by("id")).all()
        connections = {
            row.organization_id: f"{row.realm_id} ({row.status})"
            for row in conn.execute(sa.select(s.qbo_connections))
        }
    return [
        {
            "organization_id": org_id,
            "name": name,
            "quickbooks": connections.get(org_id, "not connected"),
            **{state: depth.get(org_id, {}).get(state, 0) for state in s.QUEUE_STATES},
        }
        for org_id, name in orgs
    ]


def connected_organization_ids(engine: Engine) -> list[int]:
    """Organisations with a QuickBooks connection row (whatever its status), by id."""
    c = s.qbo_connections.c
    with engine.connect() as conn:
        return list(
            conn.execute(sa.select(c.organization_id).distinct().order_by(c.organization_id)).scalars()
        )


def record_names(conn: Connection, keys: Iterable[tuple[str, int | None]]) -> dict[tuple[str, int], str]:
    """``(entity_type, id)`` → the record's DocNumber (invoices), display name (customers), name (items) or order
    number (sales orders); records that no longer exist are left out."""
    wanted: dict[str, set[int]] = {}
    for entity_type, entity_id in keys:
        if entity_id is not None and entity_type in _NAME_COLUMNS:
            wanted.setdefault(entity_type, set()).add(entity_id)
    names: dict[tuple[str, int], str] = {}
    for entity_type, ids in wanted.items():
        column = _NAME_COLUMNS[entity_type]
        table = column.table
        for entity_id, name in conn.execute(sa.select(table.c.id, column).where(table.c.id.in_(sorted(ids)))):
            names[(entity_type, entity_id)] = name
    return names


def organization_names(engine: Engine, organization_ids: Iterable[int]) -> dict[int, str]:
    """The names of ``organization_ids`` (those that exist), in one statement."""
    ids = sorted(set(organization_ids))
    if not ids:
        return {}
    orgs = s.organizations.c
    with engine.connect() as conn:
        return {
            org_id: name
            for org_id, name in conn.execute(sa.select(orgs.id, orgs.name).where(orgs.id.in_(ids)))
        }


def _organization_names(conn: Connection) -> dict[int, str]:
    return {
        org_id: name for org_id, name in conn.execute(sa.select(s.organizations.c.id, s.organizations.c.name))
    }


def dead_letter(
    engine: Engine,
    *,
    ids: Iterable[int] | None = None,
    organization_id: int | None = None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    """Dead-lettered queue rows, oldest first: row id, organisation (id and name), record (type, id, name),
    attempts, the last error and since when the row is dead."""
    query = sa.select(s.sync_queue).where(q.status == "dead").order_by(q.id).limit(limit)
    if ids is not None:
        query = query.where(q.id.in_(list(ids)))
    if organization_id is not None:
        query = query.where(q.organization_id == organization_id)
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
        names = record_names(conn, [(r["entity_type"], r["entity_id"]) for r in rows])
        organizations = _organization_names(conn)
    return [
        {
            "id": r["id"],
            "organization_id": r["organization_id"],
            "organization": organizations.get(r["organization_id"]),
            "entity_type": r["entity_type"],
            "entity_id": r["entity_id"],
            "name": names.get((r["entity_type"], r["entity_id"])),
            "attempts": r["attempts"],
            "last_error": r["last_error"],
            "dead_since": r["updated_at"],
        }
        for r in rows
    ]


def run_failures(engine: Engine, run_id: str) -> list[dict[str, Any]]:
    """The records whose last push outcome in run ``run_id`` was an error (a record that failed and then went through
    in the same run is not one), oldest first, with the message and where their queue row stands now (``dead``, or
    ``pending`` with the next attempt's time)."""
    latest = (
        sa.select(sa.func.max(log.id).label("id"))
        .where(log.run_id == run_id, log.direction == "push")
        .group_by(log.entity_type, log.entity_id)
        .subquery()
    )
    query = (
        sa.select(s.sync_log)
        .join(latest, log.id == latest.c.id)
        .where(log.outcome == "error")
        .order_by(log.id)
    )
    with engine.connect() as conn:
        errors = conn.execute(query).mappings().all()
        keys = [(r["entity_type"], r["entity_id"]) for r in errors]
        names = record_names(conn, keys)
        queue = _latest_queue_rows(conn, keys)
    failures = []
    for r in errors:
        row = queue.get((r["entity_type"], r["entity_id"]), {})
        failures.append(
            {
                "organization_id": r["organization_id"],
                "entity_type": r["entity_type"],
                "entity_id": r["entity_id"],
                "name": names.get((r["entity_type"], r["entity_id"])),
                "action": r["action"],
                "message": r["message"] or "",
                "queue_status": row.get("status"),
                "attempts": row.get("attempts"),
                "next_attempt_at": row.get("next_attempt_at") if row.get("status") == "pending" else None,
            }
        )
    return failures


def _latest_queue_rows(
    conn: Connection, keys: Iterable[tuple[str, int | None]]
) -> dict[tuple[str, int], Any]:
    """The newest queue row of each record."""
    wanted: dict[str, set[int]] = {}
    for entity_type, entity_id in keys:
        if entity_id is not None:
            wanted.setdefault(entity_type, set()).add(entity_id)
    latest: dict[tuple[str, int], Any] = {}
    for entity_type, ids in wanted.items():
        rows = conn.execute(
            sa.select(s.sync_queue)
            .where(q.entity_type == entity_type, q.entity_id.in_(sorted(ids)))
            .order_by(q.id)
        ).mappings()
        for row in rows:
            latest[(entity_type, row["entity_id"])] = row
    return latest


def find_invoices(
    engine: Engine, organization_id: int, *, ids: Iterable[int] = (), doc_numbers: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """The organisation's invoices with one of these ids or DocNumbers (compared trimmed, as the push sends them):
    ``id`` and ``doc_number`` (trimmed), by id. Another organisation's invoice is never found."""
    i = s.invoices.c
    trimmed = sa.func.trim(i.doc_number)
    wanted_ids = sorted(set(ids))
    wanted_numbers = sorted({number.strip() for number in doc_numbers})
    if not wanted_ids and not wanted_numbers:
        return []
    query = (
        sa.select(i.id, trimmed.label("doc_number"))
        .where(
            i.organization_id == organization_id, sa.or_(i.id.in_(wanted_ids), trimmed.in_(wanted_numbers))
        )
        .order_by(i.id)
    )
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def invoice_push_report(engine: Engine, invoice_ids: Iterable[int], run_id: str) -> list[dict[str, Any]]:
    """Where each invoice stands after push run ``run_id``: its row (``doc_number``, ``qbo_id``, ``status``,
    ``sync_status``, ``synced_at``), its last push outcome in that run (``run_action``, ``run_outcome``,
    ``run_message``, all ``None`` when the run did not touch it) and its newest queue row (``queue_status``,
    ``queue_error``)."""
    i = s.invoices.c
    ids = sorted(set(invoice_ids))
    latest = (
        sa.select(sa.func.max(log.id).label("id"))
        .where(log.run_id == run_id, log.entity_type == "invoice", log.entity_id.in_(ids))
        .group_by(log.entity_id)
        .subquery()
    )
    with engine.connect() as conn:
        invoices = conn.execute(
            sa.select(i.id, i.doc_number, i.qbo_id, i.status, i.sync_status, i.synced_at).where(i.id.in_(ids))
        ).mappings()
        outcomes: dict[int, Mapping[str, Any]] = {
            r["entity_id"]: dict(r)
            for r in conn.execute(sa.select(s.sync_log).join(latest, log.id == latest.c.id)).mappings()
        }
        queue = _latest_queue_rows(conn, [("invoice", invoice_id) for invoice_id in ids])
        report = []
        for invoice in invoices:
            outcome: Mapping[str, Any] = outcomes.get(invoice["id"], {})
            row: Mapping[str, Any] = queue.get(("invoice", invoice["id"]), {})
            report.append(
                {
                    **invoice,
                    "doc_number": invoice["doc_number"].strip(),
                    "run_action": outcome.get("action"),
                    "run_outcome": outcome.get("outcome"),
                    "run_message": outcome.get("message"),
                    "queue_status": row.get("status"),
                    "queue_error": row.get("last_error"),
                }
            )
    return sorted(report, key=lambda r: r["id"])


def open_conflicts(engine: Engine, limit: int = 200) -> tuple[int, list[dict[str, Any]]]:
    """How many conflicts wait for review, and the oldest ``limit`` of them with their organisation's and record's
    names, the three values and when each side changed."""
    c = s.sync_conflicts.c
    waiting = c.resolution == "pending_review"
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).where(waiting)).scalar_one()
        rows = (
            conn.execute(sa.select(s.sync_conflicts).where(waiting).order_by(c.id).limit(limit))
            .mappings()
            .all()
        )
        names = record_names(conn, [(r["entity_type"], r["entity_id"]) for r in rows])
        organizations = _organization_names(conn)
    return total, [
        {
            **r,
            "organization": organizations.get(r["organization_id"]),
            "name": names.get((r["entity_type"], r["entity_id"])),
        }
        for r in rows
    ]


def settled_conflicts(
    engine: Engine, since: timedelta, limit: int = 200, now: datetime | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """How many conflicts were settled within ``since`` — automatically by a pull or push (newest change wins) or by a
    person — and the newest ``limit`` of them, like :func:`open_conflicts` plus ``winner`` (the resolution),
    ``chosen`` (the value that won) and ``settled_at``."""
    c = s.sync_conflicts.c
    settled_at = sa.func.coalesce(c.resolved_at, c.detected_at)
    recent = sa.and_(c.resolution != "pending_review", settled_at >= (now or utcnow()) - since)
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).where(recent)).scalar_one()
        rows = (
            conn.execute(
                sa.select(s.sync_conflicts, settled_at.label("settled_at"))
                .where(recent)
                .order_by(settled_at.desc(), c.id.desc())
                .limit(limit)
            )
            .mappings()
            .all()
        )
        names = record_names(conn, [(r["entity_type"], r["entity_id"]) for r in rows])
        organizations = _organization_names(conn)
    sides = {"batchly": "batchly_value", "quickbooks": "qbo_value"}
    return total, [
        {
            **r,
            "organization": organizations.get(r["organization_id"]),
            "name": names.get((r["entity_type"], r["entity_id"])),
            "winner": r["resolution"],
            "chosen": r["resolved_value"]
            if r["resolved_value"] is not None or r["resolution"] not in sides
            else r[sides[r["resolution"]]],
        }
        for r in rows
    ]


def connection_problems(
    engine: Engine, hard_expiry_within: timedelta, now: datetime | None = None
) -> list[dict[str, Any]]:
    """QuickBooks connections that cannot be used (``needs_reauth`` or any status but ``connected``) or soon cannot:
    their refresh token's hard expiry (Intuit's 5-year cap, which no refresh extends) is within
    ``hard_expiry_within`` or past. By organisation: realm, status, the reason (the stored one, or when the cap
    ends) and ``hard_expires_at``."""
    c = s.qbo_connections.c
    now = now or utcnow()
    expiring = c.refresh_token_hard_expires_at < now + hard_expiry_within
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                c.organization_id,
                c.realm_id,
                c.status,
                c.status_reason,
                c.refresh_token_hard_expires_at.label("hard_expires_at"),
                c.updated_at,
            )
            .where(sa.or_(c.status != "connected", expiring))
            .order_by(c.organization_id)
        ).mappings()
        organizations = _organization_names(conn)
        return [
            {
                **r,
                "organization": organizations.get(r["organization_id"]),
                "status_reason": r["status_reason"]
                if r["status"] != "connected"
                else _hard_expiry(r["hard_expires_at"], now),
            }
            for r in rows
        ]


def _hard_expiry(expires_at: datetime, now: datetime) -> str:
    when = f"{expires_at:%Y-%m-%d %H:%M} UTC"
    if expires_at <= now:
        return f"the refresh token's 5-year hard expiry has expired ({when}): the connection stops at its next refresh"
    days = (expires_at - now).days
    return f"the refresh token's 5-year hard expiry expires in {days} days ({when}); no refresh extends it"


def waiting_due_rows(
    engine: Engine, longer_than: timedelta, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Per organisation with a QuickBooks connection: its due queue rows that have waited ``longer_than`` since they
    became due (how many, and the oldest one named), i.e. work no push picked up."""
    now = now or utcnow()
    since = due_since().label("due_since")
    connected = sa.select(s.qbo_connections.c.organization_id)
    waiting = sa.and_(is_due(now), since < now - longer_than, q.organization_id.in_(connected))
    ranked = (
        sa.select(
            q.id,
            q.organization_id,
            q.entity_type,
            q.entity_id,
            q.status,
            q.attempts,
            q.last_error,
            q.enqueued_at,
            since,
            sa.func.count().over(partition_by=q.organization_id).label("waiting"),
            sa.func.row_number().over(partition_by=q.organization_id, order_by=(since, q.id)).label("rank"),
        )
        .where(waiting)
        .subquery()
    )
    with engine.connect() as conn:
        rows = (
            conn.execute(sa.select(ranked).where(ranked.c.rank == 1).order_by(ranked.c.organization_id))
            .mappings()
            .all()
        )
        names = record_names(conn, [(r["entity_type"], r["entity_id"]) for r in rows])
        organizations = _organization_names(conn)
        c = s.qbo_connections.c
        connections = dict(
            conn.execute(
                sa.select(c.organization_id, c.status).where(
                    c.organization_id.in_([r["organization_id"] for r in rows])
                )
            ).all()
        )
    return [
        {
            "organization_id": r["organization_id"],
            "organization": organizations.get(r["organization_id"]),
            "connection": connections.get(r["organization_id"]),  # not "connected": no push can run
            "waiting": r["waiting"],
            "oldest_id": r["id"],
            "entity_type": r["entity_type"],
            "entity_id": r["entity_id"],
            "name": names.get((r["entity_type"], r["entity_id"])),
            "status": r["status"],
            "attempts": r["attempts"],
            "last_error": r["last_error"],
            "enqueued_at": r["enqueued_at"],
            "due_since": r["due_since"],
            "waited_seconds": (now - r["due_since"]).total_seconds(),
        }
        for r in rows
    ]


def queue_row_statuses(engine: Engine, ids: Iterable[int]) -> dict[int, str]:
    """Queue row id → its status, for the ids that exist."""
    with engine.connect() as conn:
        return {
            row_id: status
            for row_id, status in conn.execute(sa.select(q.id, q.status).where(q.id.in_(sorted(set(ids)))))
        }
