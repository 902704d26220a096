"""Tables the Dagster UI renders (``MetadataValue.table``) for what an operator acts on: failed records, the dead
letter, open conflicts, unhealthy connections, waiting queue rows and a "Sync now" report.

Every row names its record — type, id and the name an operator knows it by (an invoice's DocNumber, a customer's or
item's name) — and says why. The rows come from :mod:`batchly_pipelines.store.status`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from dagster import MetadataValue, TableColumn, TableMetadataValue, TableRecord, TableSchema

RECORD_COLUMNS = [
    TableColumn("entity_type", "string", description="customer, item, invoice"),
    TableColumn("id", "int", description="the Batchly record id"),
    TableColumn("name", "string", description="an invoice's DocNumber, a customer's or item's name"),
]


def issues(entity_type: str, entity_id: int | None, message: str) -> list[tuple[str, str]]:
    """A stored failure message as ``(field, message)`` pairs.

    Validation writes one ``"<entity> <id> <field>: <message>"`` per issue, joined by ``"; "``
    (:class:`~batchly_pipelines.rules.validation.ValidationIssue`); anything else (QuickBooks' refusal, a wait for a
    dependency) is one issue without a field.
    """
    prefix = f"{entity_type} {entity_id} "
    parts = re.split(rf"; (?={re.escape(prefix)})", message) if message else [""]
    pairs = []
    for part in parts:
        found = re.fullmatch(rf"{re.escape(prefix)}(?P<field>[^\s:]+): (?P<message>.*)", part, re.DOTALL)
        pairs.append((found["field"], found["message"]) if found else ("", part))
    return pairs


def table(columns: Sequence[TableColumn], rows: Iterable[Mapping[str, Any]]) -> TableMetadataValue:
    """A table of ``rows`` (only ``columns``' keys; times as ISO text, JSON values as JSON text)."""
    names = [column.name for column in columns]
    return MetadataValue.table(
        records=[TableRecord({name: _cell(row.get(name)) for name in names}) for row in rows],
        schema=TableSchema(columns=list(columns)),
    )


def _cell(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return json.dumps(value, default=str, sort_keys=True)


def failed_records(failures: Iterable[Mapping[str, Any]]) -> TableMetadataValue:
    """A run's failed records (:func:`~batchly_pipelines.store.status.run_failures`), one row per issue."""
    rows = []
    for failure in failures:
        if failure["queue_status"] == "pending" and failure["next_attempt_at"] is not None:
            queue = f"retried at {_cell(failure['next_attempt_at'])}"
        else:
            queue = failure["queue_status"] or ""
        for field, message in issues(failure["entity_type"], failure["entity_id"], failure["message"]):
            rows.append(
                {**failure, "id": failure["entity_id"], "field": field, "message": message, "queue": queue}
            )
    return table(
        [
            *RECORD_COLUMNS,
            TableColumn("field", "string"),
            TableColumn("message", "string"),
            TableColumn("queue", "string", description="dead (needs an operator) or when it is retried"),
        ],
        rows,
    )


def describe_failure(failure: Mapping[str, Any]) -> str:
    """One line for a failed record: ``invoice 12 (INV-7): lines: an invoice needs at least one line [dead]``."""
    name = f" ({failure['name']})" if failure.get("name") else ""
    return f"{failure['entity_type']} {failure['entity_id']}{name}: {failure['message']} [{failure['queue_status']}]"


DESCRIBED = 10  # failed records spelled out in a run's failure description (the table has them all)


def describe_failures(failures: Sequence[Mapping[str, Any]]) -> str:
    """A push run's failed records in one sentence: the first ``DESCRIBED`` of them, and where the rest are."""
    listed = "; ".join(describe_failure(f) for f in failures[:DESCRIBED])
    more = f"; and {len(failures) - DESCRIBED} more" if len(failures) > DESCRIBED else ""
    dead = sum(f["queue_status"] == "dead" for f in failures)
    retried = len(failures) - dead
    where = [
        *([f"{_are(retried)} retried with backoff by the next runs"] if retried else []),
        *(
            [
                f"{_are(dead)} in the dead letter until fixed and retried (`batchly-sync queue list --status dead`)"
            ]
            if dead
            else []
        ),
    ]
    return (
        f"{len(failures)} record(s) failed, the others were pushed and checkpointed: {listed}{more}. "
        f"{'; '.join(where)}. See the 'failed records' table"
    )


def _are(count: int) -> str:
    return f"{count} is" if count == 1 else f"{count} are"


def failure_metadata(failures: Iterable[Mapping[str, Any]]) -> dict[str, TableMetadataValue]:
    """The run's ``failed records`` table, when any record failed."""
    rows = list(failures)
    return {"failed records": failed_records(rows)} if rows else {}


def dead_letter(rows: Iterable[Mapping[str, Any]]) -> TableMetadataValue:
    """Dead-lettered queue rows (:func:`~batchly_pipelines.store.status.dead_letter`), one row per issue."""
    expanded = [
        {**row, "queue_id": row["id"], "id": row["entity_id"], "field": field, "message": message}
        for row in rows
        for field, message in issues(row["entity_type"], row["entity_id"], row["last_error"] or "")
    ]
    return table(
        [
            TableColumn("queue_id", "int", description="retry it with retry_dead_letter (ids)"),
            TableColumn("organization", "string"),
            *RECORD_COLUMNS,
            TableColumn("field", "string"),
            TableColumn("message", "string"),
            TableColumn("attempts", "int"),
            TableColumn("dead_since", "datetime"),
        ],
        expanded,
    )


CONFLICT_COLUMNS = [
    TableColumn("conflict_id", "int", description="resolve it with resolve_conflicts (conflict_ids)"),
    TableColumn("organization", "string"),
    TableColumn("entity_type", "string"),
    TableColumn("id", "int", description="the Batchly record id (none for a QuickBooks record to link)"),
    TableColumn("name", "string"),
    TableColumn("qbo_id", "string"),
    TableColumn("field", "string"),
    TableColumn("base_value", "string", description="what both sides last agreed on"),
    TableColumn("batchly_value", "string"),
    TableColumn("batchly_updated_at", "datetime", description="when Batchly changed it"),
    TableColumn("qbo_value", "string"),
    TableColumn("qbo_updated_at", "datetime", description="when QuickBooks changed it"),
    TableColumn("detected_at", "datetime"),
]


def conflicts(rows: Iterable[Mapping[str, Any]]) -> TableMetadataValue:
    """Conflicts waiting for review (:func:`~batchly_pipelines.store.status.open_conflicts`)."""
    return table(
        CONFLICT_COLUMNS, ({**row, "conflict_id": row["id"], "id": row["entity_id"]} for row in rows)
    )


def settled_conflicts(rows: Iterable[Mapping[str, Any]], job_names: Mapping[str, str]) -> TableMetadataValue:
    """Recently settled conflicts (:func:`~batchly_pipelines.store.status.settled_conflicts`) and who settled each:
    the person, or the pull or push run that applied newest-wins (``job_names``: run id → job)."""
    return table(
        [
            *CONFLICT_COLUMNS,
            TableColumn("winner", "string", description="batchly, quickbooks or value"),
            TableColumn("chosen", "string", description="the value both sides now hold"),
            TableColumn("settled_by", "string", description="a person, or the run that settled it"),
            TableColumn("settled_at", "datetime"),
        ],
        (
            {
                **row,
                "conflict_id": row["id"],
                "id": row["entity_id"],
                "settled_by": _settled_by(row, job_names),
            }
            for row in rows
        ),
    )


def _settled_by(row: Mapping[str, Any], job_names: Mapping[str, str]) -> str:
    if row.get("resolved_by"):
        return str(row["resolved_by"])
    run_id = row.get("run_id")
    if not run_id:
        return "the sync (newest change wins)"
    job = job_names.get(run_id)
    return f"{job + ' ' if job else ''}run {run_id[:8]} (newest change wins)"


def connections(rows: Iterable[Mapping[str, Any]]) -> TableMetadataValue:
    """Unusable or soon unusable QuickBooks connections
    (:func:`~batchly_pipelines.store.status.connection_problems`)."""
    return table(
        [
            TableColumn("organization_id", "int"),
            TableColumn("organization", "string"),
            TableColumn("realm_id", "string"),
            TableColumn("status", "string"),
            TableColumn("status_reason", "string"),
            TableColumn("hard_expires_at", "datetime", description="the refresh token's 5-year cap"),
            TableColumn("fix", "string"),
            TableColumn("updated_at", "datetime"),
        ],
        ({**row, "fix": f"batchly-sync connect --org {row['organization_id']}"} for row in rows),
    )


def waiting(rows: Iterable[Mapping[str, Any]]) -> TableMetadataValue:
    """Organisations whose due rows wait (:func:`~batchly_pipelines.store.status.waiting_due_rows`)."""
    return table(
        [
            TableColumn("organization_id", "int"),
            TableColumn("organization", "string"),
            TableColumn("connection", "string", description="not connected: no push runs until it is"),
            TableColumn("waiting", "int", description="due rows waiting longer than the limit"),
            TableColumn("oldest_queue_id", "int"),
            *RECORD_COLUMNS,
            TableColumn("waited_minutes", "float"),
            TableColumn("attempts", "int"),
            TableColumn("last_error", "string"),
            TableColumn("enqueued_at", "datetime"),
        ],
        (
            {
                **row,
                "oldest_queue_id": row["oldest_id"],
                "id": row["entity_id"],
                "waited_minutes": round(row["waited_seconds"] / 60, 1),
            }
            for row in rows
        ),
    )


def sync_now(rows: Iterable[Mapping[str, Any]]) -> TableMetadataValue:
    """The per-invoice report of a "Sync to QuickBooks now" run."""
    return table(
        [
            TableColumn("requested", "string", description="the DocNumber or id asked for"),
            TableColumn("id", "int", description="the Batchly invoice id"),
            TableColumn("doc_number", "string"),
            TableColumn(
                "outcome", "string", description="pushed, already synced, skipped, failed, dead, unknown"
            ),
            TableColumn("detail", "string"),
            TableColumn("qbo_id", "string"),
        ],
        rows,
    )
