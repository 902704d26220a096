"""``sync_status_sensor`` records ``sync_status`` and its checks when it never ran, after other runs end and every 5
minutes — without a run of its own."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from dagster import (
    AssetCheckEvaluation,
    AssetMaterialization,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    SensorResult,
    SkipReason,
    build_sensor_context,
    materialize,
)
from sqlalchemy.engine import Engine

from batchly_pipelines.definitions import defs
from batchly_pipelines.defs.monitoring import sensors
from batchly_pipelines.defs.monitoring.assets import sync_status
from batchly_pipelines.defs.monitoring.sensors import REFRESH_EVERY_SECONDS, sync_status_sensor
from batchly_pipelines.defs.resources import BatchlyDatabase
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.queue import SyncQueue
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.support import factories as f


def _database(engine: Engine) -> BatchlyDatabase:
    return BatchlyDatabase(database_url=engine.url.render_as_string(hide_password=False))


def _tick(instance: DagsterInstance, engine: Engine, cursor: str | None = None) -> SensorResult | SkipReason:
    context = build_sensor_context(
        instance=instance, cursor=cursor, resources={"batchly_db": _database(engine)}
    )
    result = sync_status_sensor(context)
    assert isinstance(result, SensorResult | SkipReason)
    return result


def _refresh(instance: DagsterInstance, engine: Engine) -> None:
    assert materialize([sync_status], instance=instance, resources={"batchly_db": _database(engine)}).success


def _failed(instance: DagsterInstance, job_name: str) -> DagsterRun:
    """A run that started and failed, with its events (as Dagster records a real one)."""
    run = instance.add_run(DagsterRun(job_name=job_name, status=DagsterRunStatus.STARTED))
    instance.report_run_failed(run)
    return run


def test_a_status_never_materialised_is_recorded_with_every_check_naming_the_dead_records(
    engine: Engine,
) -> None:
    with engine.begin() as conn:
        org = f.organization(conn)
        f.customer(conn, org, display_name="Bad: name")
    queue = SyncQueue(engine)
    [item] = queue.claim("w", limit=1, lease=timedelta(minutes=1))
    queue.fail(item, f"customer {item.entity_id} display_name: contains ':'", retryable=False)

    result = _tick(DagsterInstance.ephemeral(), engine)

    assert isinstance(result, SensorResult) and not result.run_requests  # no run: the sensor records it
    [materialization] = [e for e in result.asset_events if isinstance(e, AssetMaterialization)]
    assert materialization.asset_key == sync_status.key and "never materialised" in (
        materialization.description or ""
    )
    assert materialization.metadata["queue_dead"].value == 1
    checks = {e.check_name: e for e in result.asset_events if isinstance(e, AssetCheckEvaluation)}
    assert sorted(checks) == [
        "connections_healthy",
        "dead_letter_empty",
        "no_open_conflicts",
        "queue_not_waiting",
    ]
    dead = checks["dead_letter_empty"]
    assert not dead.passed and "Bad: name" in (dead.description or "")
    assert dead.metadata["records"].value.records[0].data["field"] == "display_name"


@pytest.mark.parametrize("job_name", ["push_to_quickbooks", "pull_customers", "resolve_conflicts"])
def test_a_run_that_ended_after_the_last_refresh_brings_a_refresh(engine: Engine, job_name: str) -> None:
    instance = DagsterInstance.ephemeral()
    _refresh(instance, engine)
    assert isinstance(_tick(instance, engine), SkipReason)  # the refresh itself is no reason for another

    _failed(instance, job_name)

    result = _tick(instance, engine)
    assert isinstance(result, SensorResult) and result.asset_events
    assert job_name in (result.asset_events[0].description or "")
    assert result.cursor is not None
    assert isinstance(_tick(instance, engine, result.cursor), SkipReason)  # recorded: nothing new since


def test_a_change_an_operator_would_see_is_recorded_on_the_next_tick_without_any_run(engine: Engine) -> None:
    instance = DagsterInstance.ephemeral()
    with engine.begin() as conn:
        org = f.organization(conn)
        customer = f.customer(conn, org, display_name="Zoë O'Brien")
    first = _tick(instance, engine)
    assert isinstance(first, SensorResult)
    assert isinstance(_tick(instance, engine, first.cursor), SkipReason)  # nothing changed

    with engine.begin() as conn:  # e.g. a conflict a pull outside Dagster (the CLI) left for review
        conn.execute(
            sa.insert(s.sync_conflicts).values(
                organization_id=org,
                entity_type="customer",
                entity_id=customer,
                field="email",
                batchly_value="ours@example.com",
                qbo_value="theirs@example.com",
                resolution="pending_review",
                detected_at=utcnow(),
            )
        )

    changed = _tick(instance, engine, first.cursor)
    assert isinstance(changed, SensorResult)
    assert "no_open_conflicts" in (changed.asset_events[0].description or "")
    conflicts = next(
        e
        for e in changed.asset_events
        if isinstance(e, AssetCheckEvaluation) and e.check_name == "no_open_conflicts"
    )
    assert not conflicts.passed and "Zoë O'Brien" in (conflicts.description or "")
    assert isinstance(_tick(instance, engine, changed.cursor), SkipReason)  # recorded: no news since


def test_a_quiet_status_is_refreshed_every_five_minutes(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = DagsterInstance.ephemeral()
    _refresh(instance, engine)
    now = sensors._now()
    monkeypatch.setattr(sensors, "_now", lambda: now + REFRESH_EVERY_SECONDS - 5)
    assert isinstance(_tick(instance, engine), SkipReason)
    monkeypatch.setattr(sensors, "_now", lambda: now + REFRESH_EVERY_SECONDS + 1)
    result = _tick(instance, engine)
    assert isinstance(result, SensorResult) and "ago" in (result.asset_events[0].description or "")


def test_the_sensor_runs_by_default_often_enough() -> None:
    sensor = defs.resolve_sensor_def("sync_status_sensor")
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds is not None and sensor.minimum_interval_seconds <= 60
