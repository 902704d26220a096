"""The pull's Dagster definitions, loaded from the real code location: assets over partitions (a single-run backfill
of a range), the company sensor, the nightly schedule ticks, the checks and the resolve job."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import (
    AssetKey,
    DagsterInstance,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    ExecuteInProcessResult,
    SensorResult,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)
from sqlalchemy.engine import Engine

from batchly_pipelines.definitions import defs
from batchly_pipelines.defs.partitions import (
    COMPANY,
    FROM_TAG,
    RANGE_END,
    RANGE_START,
    TO_TAG,
    company_key,
    day_tags,
    run_organizations,
    tagged_window,
)
from batchly_pipelines.defs.pull.sensors import company_partitions_sensor
from batchly_pipelines.defs.resources import BatchlyDatabase, QuickBooksResource
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.db import sync_transaction
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.support.pull import Company, link_invoices_as_pushed, open_conflicts, queue

SEED = {"customers": 30, "items": 6, "invoices": 25, "payments": 15, "days": 10, "seed": 3}


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as dagster_instance:
        yield dagster_instance


def _resources(engine: Engine) -> dict[str, Any]:
    url = engine.url.render_as_string(hide_password=False)
    return {
        "batchly_db": BatchlyDatabase(database_url=url),
        "quickbooks": QuickBooksResource(database_url=url),
    }


def _run(
    job: str,
    company: Company,
    instance: DagsterInstance,
    *,
    config: dict[str, Any] | None = None,
    **kwargs: Any,
) -> ExecuteInProcessResult:
    result = defs.resolve_job_def(job).execute_in_process(
        instance=instance,
        resources=_resources(company.engine),
        run_config=config,
        raise_on_error=False,
        **kwargs,
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return result


def _day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def _key(company: Company) -> str:
    """The company partition of the fixtures' organisation (``factories.organization`` names it Acme Ltd)."""
    return company_key(company.org, "Acme Ltd")


def _materializations(result: ExecuteInProcessResult, asset: str) -> list[Any]:
    """The run's materialisations of ``asset`` (a step materialises a mirror and its reconciled asset)."""
    step = {"qbo_customers": "customers", "batchly_customers": "customers"}.get(asset, asset)
    return [
        m
        for m in result.asset_materializations_for_node(f"pull_{step}_step")
        if m.asset_key == AssetKey(asset)
    ]


def test_definitions_load_with_the_pull_names() -> None:
    Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    for name in ("qbo_customers", "qbo_items", "qbo_payments"):
        assert graph.get(AssetKey(name)).partitions_def is not None
    lineage = {
        "qbo_customers": {AssetKey(["quickbooks", "Customer"])},
        "batchly_customers": {AssetKey("qbo_customers")},
        "batchly_invoice_payments": {AssetKey("qbo_payments")},
    }
    for name, parents in lineage.items():
        assert parents <= set(graph.get(AssetKey(name)).parent_keys)
    assert defs.resolve_job_def("resolve_conflicts")
    assert defs.resolve_sensor_def("company_partitions_sensor").default_status is DefaultSensorStatus.RUNNING


def test_the_company_sensor_keeps_partitions_in_step_with_connections(
    connected: Company, instance: DagsterInstance
) -> None:
    context = build_sensor_context(instance=instance, resources=_resources(connected.engine))
    result = company_partitions_sensor(context)
    assert isinstance(result, SensorResult)
    [request] = result.dynamic_partitions_requests or []
    assert list(request.partition_keys) == [f"acme-ltd-{connected.org}"]  # named after the organisation
    instance.add_dynamic_partitions(COMPANY, [_key(connected), "999"])  # 999: a connection since removed
    result = company_partitions_sensor(
        build_sensor_context(instance=instance, resources=_resources(connected.engine))
    )
    assert isinstance(result, SensorResult)
    [delete] = result.dynamic_partitions_requests or []
    assert list(delete.partition_keys) == ["999"]


@pytest.mark.parametrize(
    ("name", "hour", "job"),
    [
        ("payments_nightly", 2, "pull_payments"),
        ("customers_nightly", 3, "pull_customers"),
        ("items_nightly", 4, "pull_items"),
    ],
)
def test_nightly_schedules_tick_for_every_company_for_the_previous_day(
    instance: DagsterInstance, name: str, hour: int, job: str
) -> None:
    schedule = defs.resolve_schedule_def(name)
    assert (schedule.cron_schedule, schedule.job_name, schedule.execution_timezone) == (
        f"0 {hour} * * *",
        job,
        "UTC",
    )
    assert schedule.default_status is DefaultScheduleStatus.RUNNING
    tick = datetime(2026, 11, 21, hour, tzinfo=UTC)
    assert schedule.cron_schedule and tick.hour == hour
    instance.add_dynamic_partitions(COMPANY, ["7", "12"])
    requests = schedule.evaluate_tick(
        build_schedule_context(
            instance=instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def()
        )
    )
    [request] = requests.run_requests or []  # one run for the batch of companies, not one each
    assert (request.tags[RANGE_START], request.tags[RANGE_END]) == ("7", "12")
    assert FROM_TAG not in request.tags  # each company from where its last pull ended


def test_a_backfill_of_a_range_pulls_one_window_in_one_run_and_the_checks_pass(
    connected: Company, instance: DagsterInstance
) -> None:
    connected.qbo.admin.seed(connected.qbo.realm_id, **SEED)
    instance.add_dynamic_partitions(COMPANY, [_key(connected)])
    now = utcnow()
    tags = day_tags(_day(now - timedelta(days=12)), _day(now))
    result = _run("pull_customers", connected, instance, partition_key=_key(connected), tags=tags)
    [mirror] = _materializations(result, "qbo_customers")  # the company's partition, once for the range
    assert mirror.metadata["pulled"].value == SEED["customers"]
    assert (
        mirror.metadata["api_calls"].value <= 3
    )  # one window: a page and the CDC call, not one query per day
    assert mirror.partition == _key(connected)
    [batchly] = _materializations(result, "batchly_customers")
    assert batchly.metadata["created"].value == SEED["customers"]
    assert batchly.metadata["dagster/row_count"].value == SEED["customers"]
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["customers_match_quickbooks"].passed
    assert "conflicts_reviewed" not in checks  # conflicts are sync_status's no_open_conflicts, kept live
    assert len(connected.rows(s.customers)) == SEED["customers"]

    again = _run(
        "pull_customers", connected, instance, partition_key=_key(connected), tags=tags
    )  # idempotent
    assert _materializations(again, "batchly_customers")[0].metadata["changed"].value == 0
    assert queue(connected.engine) == []


def test_one_partition_of_payments_and_items_with_their_checks(
    connected: Company, instance: DagsterInstance
) -> None:
    connected.qbo.admin.seed(connected.qbo.realm_id, **{**SEED, "days": 1})
    key = _key(connected)
    instance.add_dynamic_partitions(COMPANY, [key])
    today = day_tags(_day(utcnow()))
    yesterday = day_tags(_day(utcnow() - timedelta(days=1)))
    for days in (yesterday, today):
        _run("pull_customers", connected, instance, partition_key=key, tags=days)
        items = _run("pull_items", connected, instance, partition_key=key, tags=days)
    assert len(connected.rows(s.items)) == SEED["items"]
    assert all(e.passed for e in items.get_asset_check_evaluations())
    invoices = connected.qbo.query("SELECT * FROM Invoice MAXRESULTS 1000")["Invoice"]
    link_invoices_as_pushed(connected.engine, connected.org, invoices)
    for days in (yesterday, today):
        payments = _run("pull_payments", connected, instance, partition_key=key, tags=days)
    checks = {e.check_name: e for e in payments.get_asset_check_evaluations()}
    assert checks["invoice_totals_match"].passed and checks["payment_status_consistent"].passed
    assert checks["payment_status_consistent"].metadata["checked"].value == SEED["invoices"]

    with sync_transaction(connected.engine) as conn:  # break both on purpose
        first = conn.execute(sa.select(sa.func.min(s.invoices.c.id))).scalar_one()
        conn.execute(
            sa.update(s.invoices)
            .where(s.invoices.c.id == first)
            .values(total_amount=Decimal("0.01"), payment_status="voided")
        )
    broken = _run("pull_payments", connected, instance, partition_key=key, tags=today)
    checks = {e.check_name: e for e in broken.get_asset_check_evaluations()}
    assert (
        not checks["invoice_totals_match"].passed
        and checks["invoice_totals_match"].metadata["failed"].value == 1
    )
    assert not checks["payment_status_consistent"].passed


def _conflict_on_notes(company: Company) -> dict[str, Any]:
    ada = company.qbo.customer("Ada", Notes="base")
    company.pull()
    row = company.row(s.customers, qbo_id=ada["Id"])
    with company.engine.begin() as conn:
        conn.execute(sa.update(s.customers).where(s.customers.c.id == row["id"]).values(notes="from Batchly"))
    company.act("update_customer", customer_id=ada["Id"], fields={"Notes": "from QuickBooks"})
    company.pull(review_fields=["notes"])
    [conflict] = open_conflicts(company.engine)
    return conflict


def test_the_open_conflicts_check_warns_and_the_resolve_job_applies_quickbooks(
    connected: Company, instance: DagsterInstance
) -> None:
    conflict = _conflict_on_notes(connected)
    check = defs.resolve_job_def("pull_customers")
    assert check
    result = _run(
        "resolve_conflicts",
        connected,
        instance,
        config={
            "ops": {
                "resolve_selected_conflicts": {
                    "config": {
                        "conflict_ids": [conflict["id"]],
                        "winner": "quickbooks",
                        "resolved_by": "ops@batchly",
                    }
                }
            }
        },
    )
    assert result.success
    assert connected.row(s.customers, id=conflict["entity_id"])["notes"] == "from QuickBooks"
    resolved = connected.row(s.sync_conflicts, id=conflict["id"])
    assert (resolved["resolution"], resolved["resolved_by"]) == ("quickbooks", "ops@batchly")
    assert resolved["resolved_at"] is not None
    # the Batchly edit was queued by the app; resolving for QuickBooks adds nothing to push
    assert [q["change_count"] for q in queue(connected.engine)] == [1]


def test_resolving_for_batchly_or_a_value_sends_the_change_to_the_push(
    connected: Company, instance: DagsterInstance
) -> None:
    conflict = _conflict_on_notes(connected)
    with connected.engine.begin() as conn:
        conn.execute(sa.delete(s.sync_queue))  # as if the push had run and failed on the held field
    config = {"conflict_ids": [conflict["id"]], "winner": "value", "value": "merged notes"}
    _run(
        "resolve_conflicts",
        connected,
        instance,
        config={"ops": {"resolve_selected_conflicts": {"config": config}}},
    )
    assert connected.row(s.customers, id=conflict["entity_id"])["notes"] == "merged notes"
    assert [(q["entity_type"], q["entity_id"]) for q in queue(connected.engine)] == [
        ("customer", conflict["entity_id"])
    ]
    assert connected.row(s.sync_conflicts, id=conflict["id"])["resolved_by"] == "dagster"


def test_a_run_pulls_the_days_its_tags_name_for_the_companies_of_its_range(instance: DagsterInstance) -> None:
    window = tagged_window({FROM_TAG: "2026-11-01", TO_TAG: "2026-11-04"}, "America/New_York")
    assert window is not None
    assert window.start == datetime(2026, 11, 1, 4, tzinfo=UTC)  # midnight in the pull's time zone (EDT)
    assert window.end == datetime(2026, 11, 5, 5, tzinfo=UTC)  # the last day included, whole (EST by then)
    assert tagged_window({TO_TAG: "2026-11-04"}, "UTC") == tagged_window(day_tags(date(2026, 11, 4)), "UTC")
    assert tagged_window({}) is None  # incremental
    instance.add_dynamic_partitions(COMPANY, ["acme-3", "bravo-12", "charlie-5"])
    assert run_organizations({"dagster/partition": "bravo-12"}, instance) == [12]
    assert run_organizations({RANGE_START: "acme-3", RANGE_END: "bravo-12"}, instance) == [3, 12]
    assert run_organizations({}, instance) == []


def test_the_reconciled_customers_count_every_conflict_still_waiting_for_review(
    connected: Company, instance: DagsterInstance
) -> None:
    _conflict_on_notes(connected)  # left for review by an earlier pull
    instance.add_dynamic_partitions(COMPANY, [_key(connected)])
    now = utcnow()
    tags = day_tags(_day(now), _day(now))
    result = _run("pull_customers", connected, instance, partition_key=_key(connected), tags=tags)
    [batchly] = _materializations(result, "batchly_customers")
    assert batchly.metadata["conflicts"].value == 0  # nothing new in this run …
    assert batchly.metadata["under_review"].value == 1  # … but one still waits for a person
