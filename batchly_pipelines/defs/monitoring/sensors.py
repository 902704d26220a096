"""``sync_status_sensor``: keeps ``sync_status`` and its checks live without anyone clicking.

Every tick (15 s) it evaluates the checks; it records them when what they show changed since its last record (a
check passed or failed, a count moved — a conflict left by the CLI, a resolve, a dead row), when ``sync_status`` was
never materialised, when any other run (push, pull, resolve, retry …) ended after the last refresh read the database,
and at least every five minutes. A refresh is recorded by the sensor
itself — a materialisation of ``sync_status`` and one evaluation per check, the same metadata the asset and its
checks produce — so it costs a few queries in the code server instead of a run process each time (a run per
refresh slowed the pushes it followed on a two-core machine). ``sync_status_job`` refreshes by hand.
"""

import json
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetMaterialization,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from batchly_pipelines.defs.monitoring.assets import status_metadata, sync_status, sync_status_job
from batchly_pipelines.defs.monitoring.checks import VERDICTS, Verdict
from batchly_pipelines.defs.resources import BatchlyDatabase

INTERVAL_SECONDS = 15
REFRESH_EVERY_SECONDS = 300
ENDED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]


def _now() -> float:
    return time.time()


@sensor(
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Records sync_status and its checks when what they show changed, after every other run ends and at "
    "least every 5 minutes.",
)
def sync_status_sensor(
    context: SensorEvaluationContext, batchly_db: BatchlyDatabase
) -> SensorResult | SkipReason:
    cursor = json.loads(context.cursor) if context.cursor else {}
    refreshed, refresh_run = _last_refresh(context.instance, cursor.get("read_at"))
    now = _now()
    verdicts = {name: verdict(batchly_db, context.instance) for name, verdict in VERDICTS.items()}
    seen = _fingerprint(verdicts)
    reason = _reason(context.instance, refreshed, refresh_run, now) or _changed(cursor.get("seen"), seen)
    if reason is None:
        return SkipReason("nothing changed and no run ended since the last refresh")
    context.log.info(f"refreshing sync_status: {reason}")
    events: list[AssetMaterialization | AssetCheckEvaluation] = [
        AssetMaterialization(
            asset_key=sync_status.key,
            description=f"recorded by sync_status_sensor: {reason}",
            metadata=status_metadata(batchly_db),
        ),
        *(verdict.evaluation(name) for name, verdict in verdicts.items()),
    ]
    return SensorResult(asset_events=events, cursor=json.dumps({"read_at": now, "seen": seen}))


def _fingerprint(verdicts: Mapping[str, Verdict]) -> dict[str, list[Any]]:
    """What an operator would see change in each check: whether it passed and its counts."""
    return {
        name: [verdict.passed, *(v for v in verdict.metadata.values() if isinstance(v, int))]
        for name, verdict in verdicts.items()
    }


def _changed(recorded: Mapping[str, list[Any]] | None, now: Mapping[str, list[Any]]) -> str | None:
    if recorded is None:
        return None  # the cursor predates fingerprints (or was reset): the five-minute refresh catches up
    changed = sorted(name for name in now if recorded.get(name) != now[name])
    return f"what {', '.join(changed)} show(s) changed" if changed else None


def _reason(
    instance: DagsterInstance, refreshed: float | None, refresh_run: str | None, now: float
) -> str | None:
    """Why ``sync_status`` needs a refresh now, or ``None``."""
    if refreshed is None:
        return "never materialised"
    if now - refreshed >= REFRESH_EVERY_SECONDS:
        return f"last refreshed {now - refreshed:.0f}s ago"
    ended = [
        record.dagster_run
        for record in instance.get_run_records(
            # the query from the second before (a storage may keep whole seconds), then each run's own end time
            RunsFilter(statuses=ENDED, updated_after=datetime.fromtimestamp(math.floor(refreshed) - 1, UTC)),
            limit=50,
        )
        if (record.end_time or record.update_timestamp.timestamp()) > refreshed
        and record.dagster_run.run_id != refresh_run
        and not _refreshes_status(record.dagster_run)
    ]
    if not ended:
        return None
    latest = ended[0]  # newest first
    return f"{len(ended)} run(s) ended since the last refresh, latest {latest.job_name} {latest.run_id[:8]}"


def _refreshes_status(run: DagsterRun) -> bool:
    """A run that refreshed ``sync_status`` (and nothing else) is no reason for another refresh."""
    return run.job_name == sync_status_job.name or run.asset_selection == {sync_status.key}


def _last_refresh(instance: DagsterInstance, read_at: float | None) -> tuple[float | None, str | None]:
    """When the latest refresh read the database, as a POSIX timestamp (``None``: never) — this sensor's last
    reading (its cursor), or the start of the run behind the latest materialisation if that is later — and that
    run's id."""
    starts = [read_at] if read_at is not None else []
    event = instance.get_latest_materialization_event(sync_status.key)
    run_id = event.run_id if event is not None and event.run_id else None
    if event is not None:
        record = instance.get_run_record_by_id(event.run_id) if event.run_id else None
        if record is not None:
            starts.append(record.start_time or record.create_timestamp.timestamp())
        elif read_at is None:  # recorded without a run, and this sensor's cursor is gone
            starts.append(event.timestamp)
    return max(starts, default=None), run_id
