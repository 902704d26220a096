"""Reverting Batchly edits of fields QuickBooks owns (an item's name, SKU, type, price, active flag) on every pull.

Reconcile reads what QuickBooks changed; a Batchly edit of an owned field changes nothing in QuickBooks (the push
never sends it), so reconcile alone would never meet it. After reconcile, every linked record whose link is at its
mirror row's current version is compared with that row (``rules.merge.owned_reverts``): each owned field Batchly
changed is put back to QuickBooks' value in a sync transaction (nothing echoes back as a push), recorded as an
``owned_field`` conflict settled for QuickBooks and logged. A column is written only while it still holds what was
read (decided in the UPDATE): an app edit committed meanwhile stands, and the next pass looks at it.
"""

from __future__ import annotations

from batchly_pipelines.rules.mapping import decode_snapshot
from batchly_pipelines.rules.merge import Rule, owned_reverts
from batchly_pipelines.rules.name_lists import NameList
from batchly_pipelines.store.conflicts import ConflictRecord, record_conflicts
from batchly_pipelines.store.db import Engine, sync_transaction
from batchly_pipelines.store.push_rows import write_back
from batchly_pipelines.store.records import reconciled_rows
from batchly_pipelines.store.sync_state import LogEntry, write_log

CHUNK = 1000


def revert_owned_edits(
    engine: Engine, kind: NameList, organization_id: int, *, run_id: str | None = None
) -> tuple[int, int]:
    """Put Batchly's edits of QuickBooks-owned fields of ``kind`` back; returns how many records were reverted and
    how many fields (conflicts recorded)."""
    if not any(kind.policy.rule_for(name) is Rule.QBO_OWNS for name in kind.policy.fields):
        return 0, 0
    reverted, fields, after = 0, 0, 0
    while True:
        with engine.connect() as conn:
            rows = reconciled_rows(conn, kind, organization_id, after, CHUNK)
        if not rows:
            return reverted, fields
        after = rows[-1]["id"]
        writes = []
        for row in rows:
            base = decode_snapshot(kind.entity_type, row["base"])
            result = owned_reverts(
                base, kind.mapping.from_row(row), kind.mapping.from_qbo(row["data"]), policy=kind.policy
            )
            if result.conflicts:
                writes.append((row, result))
        if not writes:
            continue
        with sync_transaction(engine) as conn:
            conflicts, log = [], []
            for row, result in writes:
                read = {name: row[name] for name in result.to_batchly}
                write_back(conn, kind.entity_type, row["id"], {}, result.to_batchly, read)
                conflicts += [
                    ConflictRecord(
                        organization_id=organization_id,
                        entity_type=kind.entity_type,
                        entity_id=row["id"],
                        qbo_id=row["qbo_id"],
                        field=conflict.field,
                        base_value=conflict.base_value,
                        batchly_value=conflict.batchly_value,
                        qbo_value=conflict.qbo_value,
                        resolution=conflict.resolution.value,
                        batchly_updated_at=row["updated_at"],
                        run_id=run_id,
                        reason=conflict.reason.value,
                    )
                    for conflict in result.conflicts
                ]
                edits = ", ".join(
                    f"{c.field} {c.batchly_value!r} → {c.qbo_value!r}" for c in result.conflicts
                )
                message = f"QuickBooks owns these fields; Batchly's edits reverted: {edits}"
                log.append(
                    LogEntry(
                        organization_id,
                        "pull",
                        kind.entity_type,
                        "revert",
                        "ok",
                        row["id"],
                        row["qbo_id"],
                        message,
                        run_id,
                    )
                )
            record_conflicts(conn, conflicts)
            write_log(conn, log)
        reverted += len(writes)
        fields += len(conflicts)
