"""Resolving reviewed conflicts: apply a person's choice to the losing side and record who chose and when.

A field conflict is settled on ``batchly`` (Batchly's current value), ``quickbooks`` (QuickBooks' current value, from
the mirror) or an explicit ``value``. What Batchly must take is written there; what QuickBooks must take goes out
through the push: the record is written (or touched) in an ordinary transaction, so the outbox queues it, and the
base keeps QuickBooks' value for that field so the push sends exactly it. A ``link`` conflict (a QuickBooks record
whose Batchly twin was unclear) is settled by linking it to a Batchly record (``value`` = its id, or ``batchly`` when
there was one candidate) or by creating a new Batchly record from QuickBooks (``quickbooks``).

A person decides on the values a conflict row shows, at its ``revision`` (every change of the values it shows is a
new one: an app edit, through the field-change trigger; a merge that read other values). A decision names the
revision it was made on (``seen``); on another one it is not applied, and when ``seen`` is given a selected
conflict missing from it (never shown to the reviewer, say one that opened after they looked) is not applied either. Nor is it when either side's value differs
from what the row shows (Batchly's row, or the mirror's QuickBooks record when the mirror holds that version or a
newer one): the row is then refreshed to the current values as its next revision. Either way the conflict stays
open and shows the current values; the other selected conflicts are still resolved, then :class:`ReviewOutdated`
names the ones refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from batchly_pipelines.quickbooks.wire import qbo_last_updated
from batchly_pipelines.rules.mapping import FieldSpec, decode_snapshot, encode_snapshot
from batchly_pipelines.rules.merge import resolve_field
from batchly_pipelines.rules.name_lists import NAME_LISTS, NameList
from batchly_pipelines.services.pull.organization import organization_policy
from batchly_pipelines.services.pull.reconcile import LINK_FIELD, reconcile
from batchly_pipelines.store.conflicts import list_conflicts, mark_resolved, refresh_review
from batchly_pipelines.store.db import Connection, Engine, sync_transaction
from batchly_pipelines.store.mirror import mirrored_data, mirrored_objects
from batchly_pipelines.store.push_rows import load_rows
from batchly_pipelines.store.records import insert_records, link_record, lock_rows, write_fields
from batchly_pipelines.store.sync_state import LogEntry, SyncState, load_states, save_states, write_log

WINNERS = ("batchly", "quickbooks", "value")


class ReviewOutdated(ValueError):
    """Some conflicts were not resolved: their values changed since they were shown (``resolved``: the others)."""

    def __init__(self, refused: list[str], resolved: list[Resolved]) -> None:
        super().__init__(" ".join(refused))
        self.refused = refused
        self.resolved = resolved


class _Changed(Exception):
    """One conflict's values changed since it was shown."""


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
    seen: Mapping[int, int] | None = None,
) -> list[Resolved]:
    """Settle the open conflicts selected by ids and/or filters on ``winner``; returns what was done for each.
    ``seen`` (conflict id → revision) says which revision of each conflict the decision was made on; when it names
    any, a selected conflict it does not name is refused (never shown to the reviewer). Empty or None: no revisions
    were named (the CLI without ``--seen``, the job without ``seen_revisions``)."""
    seen = seen or None
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
    resolved, refused = [], []
    for conflict in conflicts:
        kind = NAME_LISTS.get(conflict["entity_type"])
        if kind is None:
            raise ValueError(
                f"conflict {conflict['id']}: {conflict['entity_type']} conflicts are not resolvable"
            )
        resolve = _resolve_link if conflict["field"] == LINK_FIELD else _resolve_field
        try:
            if seen is not None and conflict["id"] not in seen:
                raise _Changed(
                    f"Conflict {conflict['id']} ({conflict['entity_type']} {conflict['entity_id']} "
                    f"{conflict['field']}) was not resolved: it was not shown to the reviewer (it is not among the "
                    f"seen revisions; it shows revision {conflict['revision']}, Batchly "
                    f"{conflict['batchly_value']!r}, QuickBooks {conflict['qbo_value']!r}); review it."
                )
            shown = seen[conflict["id"]] if seen is not None else conflict["revision"]
            if shown != conflict["revision"]:
                raise _Changed(
                    f"Conflict {conflict['id']} ({conflict['entity_type']} {conflict['entity_id']} "
                    f"{conflict['field']}) was not resolved: the decision was made on revision {shown}, it now shows "
                    f"revision {conflict['revision']} (Batchly {conflict['batchly_value']!r}, QuickBooks "
                    f"{conflict['qbo_value']!r}); review it again."
                )
            resolved.append(resolve(engine, kind, conflict, winner, value, resolved_by, run_id))
        except _Changed as exc:
            refused.append(str(exc))
    if refused:
        raise ReviewOutdated(refused, resolved)
    return resolved


def _mirror_fields(conn: Connection, kind: NameList, organization_id: int, qbo_id: str) -> dict[str, Any]:
    return kind.mapping.from_qbo(mirrored_data(conn, organization_id, kind.qbo_entity, qbo_id))


def _qbo_value(conn: Connection, kind: NameList, spec: FieldSpec, conflict: dict[str, Any]) -> Any:
    """QuickBooks' value of the conflict's field as far as Batchly knows: the mirror's, unless the conflict was seen
    on a newer version than the mirror holds (the push reads QuickBooks itself) or the mirror never held it."""
    qbo_id = conflict["qbo_id"]
    mirrored = mirrored_objects(conn, conflict["organization_id"], kind.qbo_entity, [qbo_id]).get(qbo_id)
    seen_at = conflict["qbo_updated_at"]
    if mirrored is None or (seen_at is not None and qbo_last_updated(mirrored) < seen_at):
        return spec.normalise(conflict["qbo_value"])
    return kind.mapping.from_qbo(mirrored)[spec.column]


def _resolve_field(
    engine: Engine,
    kind: NameList,
    conflict: dict[str, Any],
    winner: str,
    value: Any,
    resolved_by: str,
    run_id: str | None,
) -> Resolved:
    org, name, entity_id = conflict["organization_id"], conflict["field"], conflict["entity_id"]
    with engine.connect() as conn:
        row = load_rows(conn, kind.entity_type, [entity_id])[entity_id]
        spec = next(spec for spec in kind.mapping.specs if spec.column == name)
        batchly_value = kind.mapping.from_row(row)[name]
        qbo_value = _qbo_value(conn, kind, spec, conflict)
        [state] = load_states(conn, org, kind.entity_type, entity_ids=[entity_id])
    shown = spec.normalise(conflict["batchly_value"]), spec.normalise(conflict["qbo_value"])
    if shown != (batchly_value, qbo_value):
        with engine.begin() as conn:
            refresh_review(conn, conflict["id"], batchly_value=batchly_value, qbo_value=qbo_value)
        changed = [
            f"{side} {was!r} → {now!r}"
            for side, was, now in (("Batchly", shown[0], batchly_value), ("QuickBooks", shown[1], qbo_value))
            if was != now
        ]
        raise _Changed(
            f"Conflict {conflict['id']} ({kind.entity_type} {entity_id} {name}) was not resolved: it changed since "
            f"it was shown ({', '.join(changed)}); it now shows the current values, review it again."
        )
    chosen = {"batchly": batchly_value, "quickbooks": qbo_value}.get(winner, spec.normalise(value))
    result = resolve_field(name, chosen, batchly_value=batchly_value, qbo_value=qbo_value)
    base = {**decode_snapshot(kind.entity_type, state.base), name: qbo_value if result.to_qbo else chosen}
    # QuickBooks must change: an ordinary transaction, so the outbox queues the push (a write or a touch)
    transaction: AbstractContextManager[Connection] = (
        engine.begin() if result.to_qbo else sync_transaction(engine)
    )
    with transaction as conn:
        # the record first, then its conflict: the order an app edit takes them (its trigger refreshes the review)
        lock_rows(conn, kind.entity_type, [entity_id])
        _record(conn, kind, conflict, winner, resolved_by, chosen, f"{name} → {chosen!r} ({winner})", run_id)
        if result.to_batchly:
            write_fields(conn, kind.entity_type, entity_id, {name: chosen})
        else:  # a touch: the outbox queues the push
            write_fields(conn, kind.entity_type, entity_id, {}, touch=[name])
        save_states(conn, [SyncState(**{**vars(state), "base": encode_snapshot(base)})])
    return Resolved(conflict["id"], name, chosen, bool(result.to_batchly), bool(result.to_qbo))


def _resolve_link(
    engine: Engine,
    kind: NameList,
    conflict: dict[str, Any],
    winner: str,
    value: Any,
    resolved_by: str,
    run_id: str | None,
) -> Resolved:
    org, qbo_id = conflict["organization_id"], conflict["qbo_id"]
    candidates = [int(c) for c in str(conflict["batchly_value"] or "").split(",") if c]
    with sync_transaction(engine) as conn:
        if winner == "quickbooks":
            fields = _mirror_fields(conn, kind, org, qbo_id)
            [(entity_id, _)] = insert_records(conn, kind.entity_type, org, [(qbo_id, fields)])
        else:
            if winner == "batchly" and len(candidates) != 1:
                raise ValueError(
                    f"conflict {conflict['id']}: {len(candidates)} candidates; choose one with winner 'value'"
                )
            entity_id = int(value) if winner == "value" else candidates[0]
            if not link_record(conn, kind.entity_type, org, entity_id, qbo_id):
                raise ValueError(
                    f"conflict {conflict['id']}: {kind.entity_type} {entity_id} is not an unlinked candidate"
                )
        _record(
            conn, kind, conflict, winner, resolved_by, entity_id, f"linked to {entity_id} ({winner})", run_id
        )
    policy = organization_policy(engine, kind, org)  # the organisation's review fields hold here too
    reconcile(engine, kind, org, policy=policy, run_id=run_id, only=[qbo_id])  # first merge of the new link
    return Resolved(conflict["id"], LINK_FIELD, entity_id, winner == "quickbooks", False)


def _record(
    conn: Connection,
    kind: NameList,
    conflict: dict[str, Any],
    winner: str,
    resolved_by: str,
    chosen: Any,
    message: str,
    run_id: str | None,
) -> None:
    """Mark the conflict resolved (who, when, what) and log it, in the transaction that applies it — first, so the
    record's own write no longer counts as a change of the review. Refused if it was resolved or changed (another
    revision) since it was read."""
    marked = mark_resolved(
        conn,
        conflict["id"],
        winner=winner,
        resolved_by=resolved_by,
        value=chosen,
        revision=conflict["revision"],
    )
    if not marked:
        raise _Changed(
            f"Conflict {conflict['id']} ({kind.entity_type} {conflict['entity_id']} {conflict['field']}) was not "
            "resolved: it was resolved or changed while this decision was applied; look at it again."
        )
    entry = LogEntry(
        conflict["organization_id"],
        "pull",
        kind.entity_type,
        "resolve",
        "ok",
        conflict["entity_id"],
        conflict["qbo_id"],
        message,
        run_id,
    )
    write_log(conn, [entry])
