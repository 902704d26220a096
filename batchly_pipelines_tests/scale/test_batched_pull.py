"""A pull run over many companies (a nightly batch): every company in one step, one company's failure reported
against that company — its partitions failed, the run FAILED naming it — while every other company is pulled and
materialised. Company partitions are named after the organisation; the nightly schedules batch them."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from dagster import (
    AssetKey,
    AssetPartitionStatus,
    DagsterInstance,
    SensorResult,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)
from sqlalchemy.engine import Engine

from batchly_pipelines.definitions import defs
from batchly_pipelines.defs import partitions
from batchly_pipelines.defs.partitions import COMPANY, RANGE_END, RANGE_START, company_key, company_partitions
from batchly_pipelines.defs.pull import assets, schedules
from batchly_pipelines.defs.pull.sensors import company_partitions_sensor
from batchly_pipelines.defs.resources import BatchlyDatabase, QuickBooksResource
from batchly_pipelines.store import schema as s
from batchly_pipelines_tests.scale.conftest import Connect
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxServer


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as dagster_instance:
        yield dagster_instance


def _resources(engine: Engine) -> dict[str, object]:
    url = engine.url.render_as_string(hide_password=False)
    # time_scale: the client's retry pauses compressed, so a realm answering 500s gives up quickly
    return {
        "batchly_db": BatchlyDatabase(database_url=url),
        "quickbooks": QuickBooksResource(database_url=url, time_scale=200),
    }


def _sensor(instance: DagsterInstance, engine: Engine) -> SensorResult:
    result = company_partitions_sensor(build_sensor_context(instance=instance, resources=_resources(engine)))
    assert isinstance(result, SensorResult)
    for request in result.dynamic_partitions_requests or []:
        if request.partition_keys and type(request).__name__.startswith("Add"):
            instance.add_dynamic_partitions(COMPANY, list(request.partition_keys))
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(COMPANY, key)
    return result


def test_company_partitions_are_named_after_the_organisation_and_keep_their_key_on_rename(
    engine: Engine, connect: Connect, instance: DagsterInstance
) -> None:
    acme, _ = connect("Acme Trading Ltd.")
    zoe, _ = connect("Zoë's Café, [Nord] | Süd")
    _sensor(instance, engine)
    assert instance.get_dynamic_partitions(COMPANY) == [
        f"acme-trading-ltd-{acme}",
        f"zoe-s-cafe-nord-sud-{zoe}",
    ]
    with engine.begin() as conn:
        conn.execute(sa.update(s.organizations).where(s.organizations.c.id == acme).values(name="Renamed"))
        conn.execute(sa.delete(s.qbo_connections).where(s.qbo_connections.c.organization_id == zoe))
    _sensor(instance, engine)
    assert instance.get_dynamic_partitions(COMPANY) == [
        f"acme-trading-ltd-{acme}"
    ]  # history stays on its key
    assert partitions.organization_id(f"acme-trading-ltd-{acme}") == acme
    assert company_key(12, "") == "12"


def test_one_company_answering_500s_fails_alone_and_the_others_are_pulled(
    engine: Engine,
    connect: Connect,
    sandbox: SandboxServer,
    instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin = SandboxAdmin(sandbox.base_url)
    companies = [connect(name) for name in ("Alpha", "Broken Books", "Gamma", "Delta")]
    for _, realm in companies:
        admin.seed(realm, customers=6, items=0, invoices=0, payments=0, days=3)
    broken_org, broken_realm = companies[1]
    admin.set_faults(broken_realm, error_500=1.0)
    monkeypatch.setattr(assets, "RUNTIME", dataclasses.replace(assets.RUNTIME, company_retry_s=0.05))
    _sensor(instance, engine)
    keys = instance.get_dynamic_partitions(COMPANY)
    broken = next(key for key in keys if key.startswith("broken-books-"))

    result = defs.resolve_job_def("pull_customers").execute_in_process(
        instance=instance,
        resources=_resources(engine),
        tags={RANGE_START: keys[0], RANGE_END: keys[-1]},
        raise_on_error=False,
    )

    assert not result.success  # loud: the run failed ...
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.user_failure_data.description  # ... naming the company
    assert message == f"1 of 4 companies failed: {broken}"
    table = failure.step_failure_data.user_failure_data.metadata["failed_companies"].value
    assert broken in table and "attempts" in table and "| 3 |" in table  # tried three times
    [observed] = instance.fetch_observations(AssetKey("qbo_customers"), limit=5).records
    assert observed.asset_observation is not None
    table = observed.asset_observation.metadata["companies"].value
    assert len(table.splitlines()) == 2 + len(keys)  # a row per company, in one event
    assert "ServerError" in next(line for line in table.splitlines() if line.startswith(f"| {broken} "))
    good = set(keys) - {broken}
    for asset in ("qbo_customers", "batchly_customers"):  # every other company materialised, each on its own
        assert instance.get_materialized_partitions(AssetKey(asset)) == good, asset
        status = instance.get_status_by_partition(AssetKey(asset), keys, company_partitions)
        assert status is not None and status[broken] == AssetPartitionStatus.FAILED, asset
        assert {status[key] for key in good} == {AssetPartitionStatus.MATERIALIZED}
    with engine.connect() as conn:
        by_org = dict(
            conn.execute(
                sa.select(s.customers.c.organization_id, sa.func.count()).group_by(
                    s.customers.c.organization_id
                )
            ).all()
        )
    assert by_org == {org: 6 for org, _ in companies if org != broken_org}
    checks = {e.check_name for e in result.get_asset_check_evaluations()}
    assert checks == set()  # the checks of a failed step are skipped (they run with the next successful pull)

    admin.set_faults(broken_realm)  # QuickBooks answers again: the failed partition alone is re-run
    again = defs.resolve_job_def("pull_customers").execute_in_process(
        instance=instance, resources=_resources(engine), partition_key=broken, raise_on_error=False
    )
    assert again.success
    assert instance.get_materialized_partitions(AssetKey("batchly_customers")) == set(keys)


def test_the_nightly_schedule_asks_for_one_run_per_batch_of_companies(
    instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [f"company-{n}" for n in range(1, 8)]
    instance.add_dynamic_partitions(COMPANY, keys)
    monkeypatch.setattr(schedules, "RUNTIME", dataclasses.replace(schedules.RUNTIME, nightly_batch=3))
    schedule = schedules.nightly("customers_nightly", "pull_customers", 3)
    tick = datetime(2026, 11, 21, 3, tzinfo=UTC)
    result = schedule.evaluate_tick(
        build_schedule_context(
            instance=instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def()
        )
    )
    requests = result.run_requests or []
    assert [(r.tags[RANGE_START], r.tags[RANGE_END]) for r in requests] == [
        ("company-1", "company-3"),
        ("company-4", "company-6"),
        ("company-7", "company-7"),
    ]
    assert len({r.run_key for r in requests}) == 3
    assert all(r.tags[schedules.NIGHT_TAG] == "2026-11-21" for r in requests)
