"""``sync_status_sensor``: keeps ``sync_status`` and its checks live without anyone clicking.

It refreshes them when ``sync_status`` was never materialised, when any other run (push, pull, resolve, retry …)
ended after the last refresh read the database, and at least every five minutes. A refresh is recorded by the sensor
itself — a materialisation of ``sync_status`` and one evaluation per check, the same metadata the asset and its
checks produce — so it costs a few queries in the code server instead of a run process each time (a run per
refresh slowed the pushes it followed on a two-core machine). ``sync_status_job`` refreshes by hand.
"""

import json
import math
import time
from datetime import UTC, datetime

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
from batchly_pipelines.defs.monitoring.checks import VERDICTS
from batchly_pipelines.defs.resources import BatchlyDatabase

INTERVAL_SECONDS = 15
REFRESH_EVERY_SECONDS = 300
ENDED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]


def _now() -> float:
    return time.time()


@sensor(
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Records sync_status and its checks after every other run ends and at least every 5 minutes.",
)
def sync_status_sensor(
    context: SensorEvaluationContext, batchly_db: BatchlyDatabase
) -> SensorResult | SkipReason:
    read_at = json.loads(context.cursor)["read_at"] if context.cursor else None
    refreshed, refresh_run = _last_refresh(context.instance, read_at)
    now = _now()
    reason = _reason(context.instance, refreshed, refresh_run, now)
    if reason is None:
        return SkipReason("no run ended since the last refresh")
    context.log.info(f"refreshing sync_status: {reason}")
    events: list[AssetMaterialization | AssetCheckEvaluation] = [
        AssetMaterialization(
            asset_key=sync_status.key,
            description=f"recorded by sync_status_sensor: {reason}",
            metadata=status_metadata(batchly_db),
        ),
        *(verdict(batchly_db).evaluation(name) for name, verdict in VERDICTS.items()),
    ]
    return SensorResult(asset_events=events, cursor=json.dumps({"read_at": now}))


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
