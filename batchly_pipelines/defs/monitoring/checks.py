"""Checks of ``sync_status``: the dead letter, open conflicts, connection health and due rows left waiting.

Each is a :class:`Verdict` computed from the Batchly database, returned by the asset check when ``sync_status`` is
materialised and recorded by ``sync_status_sensor`` after every other run ends and at least every five minutes — so
the checks follow the database without anyone clicking. Each verdict names the records behind it (a table: the
record, its DocNumber or name, the field and the reason) and says what to do.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    DagsterInstance,
    MetadataValue,
    RunsFilter,
    asset_check,
)

from batchly_pipelines.defs.monitoring import tables
from batchly_pipelines.defs.monitoring.assets import sync_status
from batchly_pipelines.defs.resources import BatchlyDatabase
from batchly_pipelines.store.status import (
    connection_problems,
    dead_letter,
    open_conflicts,
    settled_conflicts,
    waiting_due_rows,
)

ROWS = 200  # records listed per check (the counts are complete)
NAMED = 5  # records named in a check's description
WAITING_LIMIT = timedelta(minutes=10)  # a due row no push took for this long means the queue is stuck
# Intuit warns in product 30 days before a refresh token's hard expiry: so does connections_healthy
HARD_EXPIRY_WARNING = timedelta(days=30)
SETTLED_WITHIN = timedelta(days=7)  # settled conflicts listed beside the open ones


@dataclass(frozen=True)
class Verdict:
    """A check's outcome, whoever records it: the asset check (a result) or the sensor (an evaluation)."""

    passed: bool
    severity: AssetCheckSeverity
    description: str
    metadata: Mapping[str, Any]

    def result(self) -> AssetCheckResult:
        return AssetCheckResult(
            passed=self.passed,
            severity=self.severity,
            description=self.description,
            metadata=dict(self.metadata),
        )

    def evaluation(self, check_name: str) -> AssetCheckEvaluation:
        return AssetCheckEvaluation(
            asset_key=sync_status.key,
            check_name=check_name,
            passed=self.passed,
            severity=self.severity,
            description=self.description,
            metadata=dict(self.metadata),
        )


def _named(
    rows: Sequence[Mapping[str, Any]], describe: Callable[[Mapping[str, Any]], str], total: int
) -> str:
    listed = "; ".join(describe(row) for row in rows[:NAMED])
    return listed + (f"; and {total - NAMED} more" if total > NAMED else "")


def _record(row: Mapping[str, Any]) -> str:
    name = f" ({row['name']})" if row.get("name") else ""
    return f"{row['entity_type']} {row['entity_id']}{name}"


def _dead_letter_empty(batchly_db: BatchlyDatabase, instance: DagsterInstance) -> Verdict:
    dead = sum(d["dead"] for d in batchly_db.queue.depth().values())
    rows = dead_letter(batchly_db.engine, limit=ROWS)
    return Verdict(
        passed=dead == 0,
        severity=AssetCheckSeverity.ERROR,
        metadata={"dead": dead, "records": tables.dead_letter(rows)},
        description=(
            f"{dead} record(s) in the dead letter: "
            + _named(rows, lambda row: f"{_record(row)}: {row['last_error']}", dead)
            if dead
            else "dead letter empty"
        ),
    )


def _no_open_conflicts(batchly_db: BatchlyDatabase, instance: DagsterInstance) -> Verdict:
    total, rows = open_conflicts(batchly_db.engine, limit=ROWS)
    settled_total, settled = settled_conflicts(batchly_db.engine, SETTLED_WITHIN, limit=ROWS)
    return Verdict(
        passed=total == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "open": total,
            "conflicts": tables.conflicts(rows),
            "settled_recently": settled_total,
            "settled": tables.settled_conflicts(settled, _job_names(instance, settled)),
        },
        description=(
            f"{total} conflict(s) waiting for review: "
            + _named(
                rows,
                lambda row: (
                    f"conflict {row['id']}, {_record(row)} {row['field']}: Batchly {row['batchly_value']!r}, "
                    f"QuickBooks {row['qbo_value']!r}"
                ),
                total,
            )
            if total
            else "no conflict waiting for review"
        )
        + f" ({settled_total} settled in the last {SETTLED_WITHIN.days} days)",
    )


def _job_names(instance: DagsterInstance, rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Run id → job name of the runs that recorded these conflicts (runs Dagster no longer has are left out)."""
    run_ids = sorted({row["run_id"] for row in rows if row.get("run_id")})
    if not run_ids:
        return {}
    return {
        record.dagster_run.run_id: record.dagster_run.job_name
        for record in instance.get_run_records(RunsFilter(run_ids=run_ids))
    }


def _connections_healthy(batchly_db: BatchlyDatabase, instance: DagsterInstance) -> Verdict:
    rows = connection_problems(batchly_db.engine, HARD_EXPIRY_WARNING)
    return Verdict(
        passed=not rows,
        severity=AssetCheckSeverity.ERROR,
        metadata={"unhealthy": len(rows), "connections": tables.connections(rows)},
        description=(
            f"{len(rows)} connection(s) unusable or about to be: "
            + _named(
                rows,
                lambda row: (
                    f"organisation {row['organization_id']} ({row['organization']}) {row['status']}: "
                    f"{row['status_reason']} — `batchly-sync connect --org {row['organization_id']}`"
                ),
                len(rows),
            )
            if rows
            else f"every connection is usable for {HARD_EXPIRY_WARNING.days} days at least"
        ),
    )


CONNECTION_STATES = {"needs_reauth": "needs re-authorisation", "disconnected": "is disconnected"}


def _queue_not_waiting(batchly_db: BatchlyDatabase, instance: DagsterInstance) -> Verdict:
    rows = waiting_due_rows(batchly_db.engine, WAITING_LIMIT)
    waiting = sum(row["waiting"] for row in rows)
    oldest = max((row["waited_seconds"] for row in rows), default=0.0)
    return Verdict(
        passed=not rows,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "waiting": waiting,
            "oldest_waited_minutes": MetadataValue.float(round(oldest / 60, 1)),
            "organizations": tables.waiting(rows),
        },
        description=(
            f"{waiting} due row(s) waited more than {WAITING_LIMIT.seconds // 60} minutes: "
            + _named(
                rows,
                lambda row: (
                    f"organisation {row['organization_id']} ({row['organization']}): {row['waiting']}, "
                    f"oldest {_record(row)} for {row['waited_seconds'] / 60:.0f} min"
                    + (
                        f" — its QuickBooks connection {CONNECTION_STATES.get(row['connection'], row['connection'])}"
                        ": nothing is pushed until it is connected again (see connections_healthy)"
                        if row["connection"] not in (None, "connected")
                        else ""
                    )
                ),
                len(rows),
            )
            if rows
            else "no due row is left waiting"
        ),
    )


VerdictOf = Callable[[BatchlyDatabase, DagsterInstance], Verdict]


def _check(name: str, verdict: VerdictOf, description: str) -> AssetChecksDefinition:
    @asset_check(asset=sync_status, name=name, description=description)
    def check(context: AssetCheckExecutionContext, batchly_db: BatchlyDatabase) -> AssetCheckResult:
        return verdict(batchly_db, context.instance).result()

    return check


# what sync_status_sensor records: check name → verdict
VERDICTS: dict[str, VerdictOf] = {
    "dead_letter_empty": _dead_letter_empty,
    "no_open_conflicts": _no_open_conflicts,
    "connections_healthy": _connections_healthy,
    "queue_not_waiting": _queue_not_waiting,
}

dead_letter_empty = _check(
    "dead_letter_empty",
    _dead_letter_empty,
    "Records in the dead letter need an operator: fix the record (an edit queues it again) or retry "
    "them with the retry_dead_letter job (`batchly-sync queue retry`). A dead row leaves once its record syncs.",
)
no_open_conflicts = _check(
    "no_open_conflicts",
    _no_open_conflicts,
    "Conflicts waiting for review, with the conflicts settled in the last 7 days (by a pull or push, newest "
    "change wins, or by a person): resolve open ones with the resolve_conflicts job (conflict_ids and winner) or "
    "`batchly-sync conflicts resolve`.",
)
connections_healthy = _check(
    "connections_healthy",
    _connections_healthy,
    "Every QuickBooks connection is usable, and its refresh token's hard expiry (Intuit's 5-year cap) is more "
    f"than {HARD_EXPIRY_WARNING.days} days away; a connection that needs re-authorisation stops its organisation's "
    "sync until someone runs `batchly-sync connect --org N`, which also starts a new 5 years.",
)
queue_not_waiting = _check(
    "queue_not_waiting",
    _queue_not_waiting,
    f"No due queue row of a connected organisation waited more than {WAITING_LIMIT.seconds // 60} "
    "minutes for a push (the sensor is stopped, a run holds the company's slot, or the connection is broken).",
)
