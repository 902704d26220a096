"""Resolving reviewed conflicts: apply a person's choice to the losing side and record who chose and when.

A field conflict is settled on ``batchly`` (Batchly's current value), ``quickbooks`` (QuickBooks' current value, from
the mirror) or an explicit ``value``. What Batchly must take is written there; what QuickBooks must take goes out
through the push: the record is written (or touched) in an ordinary transaction, so the outbox queues it, and the
base keeps QuickBooks' value for that field so the push sends exactly it. A ``link`` conflict (a QuickBooks record
whose Batchly twin was unclear) is settled by linking it to a Batchly record (``value`` = its id, or ``batchly`` when
there was one candidate) or by creating a new Batchly record from QuickBooks (``quickbooks``).
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchly_pipelines.rules.mapping import decode_snapshot, encode_snapshot
from batchly_pipelines.rules.merge import resolve_field
from batchly_pipelines.services.pull.reconcile import KINDS, LINK_FIELD, EntityKind, reconcile
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.conflicts import list_conflicts, mark_resolved
from batchly_pipelines.store.db import sync_transaction
from batchly_pipelines.store.sync_state import LogEntry, SyncState, load_states, save_states, write_log

WINNERS = ("batchly", "quickbooks", "value")


@dataclass(frozen=True)
class Resolved:
    """One conflict settled: what was chosen and which sides were written."""

    conflict_id: int
    field: str
    chosen: Any
    to_batchly: bool
    to_quickbooks: bool


def resolve_conflicts(
    engine: Engine,
    *,
    winner: str,
    resolved_by: str,
    value: Any = None,
    conflict_ids: Iterable[int] | None = None,
    organization_id: int | None = None,
    entity_type: str | None = None,
    field: str | None = None,
    run_id: str | None = None,
) -> list[Resolved]:
    """Settle the open conflicts selected by ids and/or filters on ``winner``; returns what was done for each."""
    if winner not in WINNERS:
        raise ValueError(f"winner must be one of {', '.join(WINNERS)}, not {winner!r}")
    if winner == "value" and value is None:
        raise ValueError("winner 'value' needs the value to apply")
    with engine.connect() as conn:
        conflicts = list_conflicts(
            conn,
            organization_id=organization_id,
            entity_type=entity_type,
            field=field,
            ids=list(conflict_ids) if conflict_ids is not None else None,
            limit=100_000,
        )
    resolved = []
    for conflict in conflicts:
        kind = KINDS.get(conflict["entity_type"])
        if kind is None:
            raise ValueError(
                f"conflict {conflict['id']}: {conflict['entity_type']} conflicts are not resolvable"
            )
        resolve = _resolve_link if conflict["field"] == LINK_FIELD else _resolve_field
        resolved.append(resolve(engine, kind, conflict, winner, value, resolved_by, run_id))
    return resolved


def _mirror_fields(conn: Connection, kind: EntityKind, organization_id: int, qbo_id: str) -> dict[str, Any]:
    m = s.qbo_mirror.c
    data = conn.execute(
        sa.select(m.data).where(
            m.organization_id == organization_id, m.entity_type == kind.qbo_entity, m.qbo_id == qbo_id
        )
    ).scalar_one()
    return kind.mapping.from_qbo(data)


def _resolve_field(
    engine: Engine,
    kind: EntityKind,
    conflict: dict[str, Any],
    winner: str,
    value: Any,
    resolved_by: str,
    run_id: str | None,
) -> Resolved:
    org, name, entity_id = conflict["organization_id"], conflict["field"], conflict["entity_id"]
    t = kind.table
    with engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.id == entity_id)).mappings().one()
        batchly_value = kind.mapping.from_row(dict(row))[name]
        qbo_value = _mirror_fields(conn, kind, org, conflict["qbo_id"])[name]
        [state] = load_states(conn, org, kind.entity, entity_ids=[entity_id])
    spec = next(spec for spec in kind.mapping.specs if spec.column == name)
    chosen = {"batchly": batchly_value, "quickbooks": qbo_value}.get(winner, spec.normalise(value))
    result = resolve_field(name, chosen, batchly_value=batchly_value, qbo_value=qbo_value)
    base = {**decode_snapshot(kind.entity, state.base), name: qbo_value if result.to_qbo else chosen}
    # QuickBooks must change: an ordinary transaction, so the outbox queues the push (a write or a touch)
    transaction: AbstractContextManager[Connection] = (
        engine.begin() if result.to_qbo else sync_transaction(engine)
    )
    with transaction as conn:
        new_value = chosen if result.to_batchly else t.c[name]
        conn.execute(
            sa.update(t).where(t.c.id == entity_id).values({name: new_value, "updated_at": t.c.updated_at})
        )
        save_states(conn, [SyncState(**{**vars(state), "base": encode_snapshot(base)})])
        _record(conn, kind, conflict, winner, resolved_by, chosen, f"{name} → {chosen!r} ({winner})", run_id)
    return Resolved(conflict["id"], name, chosen, bool(result.to_batchly), bool(result.to_qbo))


def _resolve_link(
    engine: Engine,
    kind: EntityKind,
    conflict: dict[str, Any],
    winner: str,
    value: Any,
    resolved_by: str,
    run_id: str | None,
) -> Resolved:
    org, qbo_id = conflict["organization_id"], conflict["qbo_id"]
    candidates = [int(c) for c in str(conflict["batchly_value"] or "").split(",") if c]
    t = kind.table
    with sync_transaction(engine) as conn:
        if winner == "quickbooks":
            fields = _mirror_fields(conn, kind, org, qbo_id)
            key = conn.execute(
                sa.insert(t).values(organization_id=org, qbo_id=qbo_id, **fields)
            ).inserted_primary_key
            assert key is not None
            entity_id = int(key[0])
        else:
            if winner == "batchly" and len(candidates) != 1:
                raise ValueError(
                    f"conflict {conflict['id']}: {len(candidates)} candidates; choose one with winner 'value'"
                )
            entity_id = int(value) if winner == "value" else candidates[0]
            linked = conn.execute(
                sa.update(t)
                .where(t.c.id == entity_id, t.c.organization_id == org, t.c.qbo_id.is_(None))
                .values(qbo_id=qbo_id, updated_at=t.c.updated_at)
            ).rowcount
            if not linked:
                raise ValueError(
                    f"conflict {conflict['id']}: {kind.entity} {entity_id} is not an unlinked candidate"
                )
        _record(
            conn, kind, conflict, winner, resolved_by, entity_id, f"linked to {entity_id} ({winner})", run_id
        )
    reconcile(engine, kind, org, run_id=run_id, only=[qbo_id])  # first merge of the new link
    return Resolved(conflict["id"], LINK_FIELD, entity_id, winner == "quickbooks", False)


def _record(
    conn: Connection,
    kind: EntityKind,
    conflict: dict[str, Any],
    winner: str,
    resolved_by: str,
    chosen: Any,
    message: str,
    run_id: str | None,
) -> None:
    """Mark the conflict resolved (who, when, what) and log it, in the transaction that applied it."""
    if not mark_resolved(conn, conflict["id"], winner=winner, resolved_by=resolved_by, value=chosen):
        raise RuntimeError(f"conflict {conflict['id']} was resolved meanwhile")
    entry = LogEntry(
        conflict["organization_id"],
        "pull",
        kind.entity,
        "resolve",
        "ok",
        conflict["entity_id"],
        conflict["qbo_id"],
        message,
        run_id,
    )
    write_log(conn, [entry])
