"""``webhooks_flowing`` and ``read_budget``: the checks of ``sync_status`` that ``webhook_checks_sensor`` records."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    DagsterInstance,
    SensorResult,
    SkipReason,
    build_sensor_context,
)
from sqlalchemy.engine import Engine

from batchly_pipelines.definitions import defs
from batchly_pipelines.defs.resources import BatchlyDatabase
from batchly_pipelines.defs.webhooks import sensors
from batchly_pipelines.defs.webhooks.checks import read_budget_verdict, webhooks_flowing_verdict
from batchly_pipelines.defs.webhooks.sensors import webhook_checks_sensor
from batchly_pipelines.services.webhooks.repair import CDC_HORIZON
from batchly_pipelines.settings import LOCAL_CLIENT_ID
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.read_budget import DatabaseReadMeter
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines.store.webhook_repair import save_sweep
from batchly_pipelines_tests.support.pull import Company


def _db(engine: Engine) -> BatchlyDatabase:
    return BatchlyDatabase(database_url=engine.url.render_as_string(hide_password=False))


def test_the_real_definitions_carry_both_checks_and_their_sensor() -> None:
    keys = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert {"webhooks_flowing", "read_budget"} <= keys
    assert defs.resolve_sensor_def("webhook_checks_sensor").default_status.value == "RUNNING"
    job = defs.resolve_job_def("sync_status_job")  # the refresh by hand evaluates them too
    assert {"webhooks_flowing", "read_budget"} <= {
        key.name for key in job.asset_layer.asset_graph.asset_check_keys
    }


def test_read_budget_warns_at_80_percent_with_the_forecast(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QBO_CLIENT_ID", raising=False)
    monkeypatch.setenv("BATCHLY_READ_QUOTA", "10")
    meter = DatabaseReadMeter(engine, LOCAL_CLIENT_ID, "4620816365")
    for _ in range(7):
        meter.count("query")
    assert read_budget_verdict(_db(engine)).passed
    meter.count("cdc")
    warned = read_budget_verdict(_db(engine))
    assert (warned.passed, warned.severity) == (False, AssetCheckSeverity.WARN)
    assert (
        warned.description.startswith("8 QuickBooks reads in ")
        and "at the current rate" in warned.description
    )
    assert warned.metadata["reads"] == 8 and warned.metadata["forecast"] >= 8
    for _ in range(2):
        meter.count("read")
    exhausted = read_budget_verdict(_db(engine))
    assert (
        exhausted.severity == AssetCheckSeverity.ERROR and "blocks the app's reads" in exhausted.description
    )
    monkeypatch.setenv("BATCHLY_READ_QUOTA", "lots")
    with pytest.raises(ValueError, match="BATCHLY_READ_QUOTA"):
        read_budget_verdict(_db(engine))


def test_webhooks_flowing_fails_for_a_silent_realm_and_a_gap_near_the_horizon(
    company: Company, monkeypatch: pytest.MonkeyPatch
) -> None:
    realm = company.qbo.realm_id
    monkeypatch.setenv("BATCHLY_WEBHOOK_SILENCE_HOURS", "24")
    assert webhooks_flowing_verdict(_db(company.engine)).passed  # connected just now
    with company.engine.begin() as conn:  # connected two hours ago, and nothing came since
        conn.execute(sa.update(s.qbo_connections).values(created_at=utcnow() - timedelta(hours=2)))
    monkeypatch.setenv("BATCHLY_WEBHOOK_SILENCE_HOURS", "1")
    silent = webhooks_flowing_verdict(_db(company.engine))
    assert (silent.passed, silent.severity) == (False, AssetCheckSeverity.WARN)
    assert f"realm {realm} sent no webhook event" in silent.description
    monkeypatch.setenv("BATCHLY_WEBHOOK_SILENCE_HOURS", "10000")
    with company.engine.begin() as conn:  # the last sweep covered up to 26 days ago
        save_sweep(conn, realm, utcnow() - CDC_HORIZON + timedelta(days=4), utcnow(), 0)
    old = webhooks_flowing_verdict(_db(company.engine))
    assert (old.passed, old.severity) == (False, AssetCheckSeverity.ERROR)
    assert "no CDC sweep has covered the last 26.0 days" in old.description


def test_the_sensor_records_the_checks_when_their_outcome_changes(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCHLY_READ_QUOTA", "2")
    instance = DagsterInstance.ephemeral()

    def tick(cursor: str | None) -> SensorResult | SkipReason:
        context = build_sensor_context(
            instance=instance, cursor=cursor, resources={"batchly_db": _db(engine)}
        )
        result = webhook_checks_sensor(context)
        assert isinstance(result, SensorResult | SkipReason)
        return result

    first = tick(None)
    assert isinstance(first, SensorResult)
    names = {e.check_name: e.passed for e in first.asset_events if isinstance(e, AssetCheckEvaluation)}
    assert names == {"webhooks_flowing": True, "read_budget": True}
    assert isinstance(tick(first.cursor), SkipReason)  # nothing changed
    DatabaseReadMeter(engine, LOCAL_CLIENT_ID, "1").count("query")
    DatabaseReadMeter(engine, LOCAL_CLIENT_ID, "1").count("query")
    changed = tick(first.cursor)
    assert isinstance(changed, SensorResult)
    [budget] = [
        e
        for e in changed.asset_events
        if isinstance(e, AssetCheckEvaluation) and e.check_name == "read_budget"
    ]
    assert not budget.passed
    monkeypatch.setattr(sensors, "CHECKS_RECORD_EVERY_SECONDS", 0.0)
    assert isinstance(tick(changed.cursor), SensorResult)  # and at least every so often
