"""The Dagster side: ``push_to_quickbooks`` in process, ``sync_queue_sensor`` ticks, the real definitions."""

from __future__ import annotations

import json
from datetime import timedelta

from dagster import (
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    SensorResult,
    SkipReason,
    build_sensor_context,
)
from sqlalchemy.engine import Engine

from batchly_pipelines.definitions import defs
from batchly_pipelines.defs.push.job import push_to_quickbooks
from batchly_pipelines.defs.push.sensor import ORGANIZATION_TAG, REALM_TAG, sync_queue_sensor
from batchly_pipelines.defs.resources import BatchlyDatabase, QuickBooksResource
from batchly_pipelines.store.queue import SyncQueue
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.push import TIME_SCALE, Books, queue_status


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def test_sync_now_pushes_only_the_chosen_invoices_and_reports_progress(
    engine: Engine, org: int, books: Books, environment: None
) -> None:
    with engine.begin() as conn:
        customer = f.customer(conn, org)
        item = f.item(conn, org)
        chosen = f.invoice(conn, org, customer, item, doc_number="NOW-1")
        later = f.invoice(conn, org, customer, item, doc_number="LATER-1")

    result = push_to_quickbooks.execute_in_process(
        run_config={"ops": {"push_records": {"config": {"organization_id": org, "invoice_ids": [chosen]}}}},
        resources={
            "batchly_db": BatchlyDatabase(database_url=_url(engine)),
            "quickbooks": QuickBooksResource(database_url=_url(engine), time_scale=TIME_SCALE),
        },
    )

    assert result.success
    assert list(books.by_doc_number()) == ["NOW-1"]
    assert queue_status(engine, "invoice", later) == ("pending", None)
    summary = result.output_for_node("push_records")
    assert summary["actions"] == {"customer.create": 1, "invoice.create": 1, "item.create": 1}
    observations = [
        event.event_specific_data.asset_observation.metadata  # type: ignore[union-attr]
        for event in result.all_events
        if event.event_type_value == "ASSET_OBSERVATION"
    ]
    progress = [(m["done"].value, m["total"].value) for m in observations if "done" in m]
    assert progress[-1] == (3, 3)
    assert observations[-1]["queue_pending"].value == 1


def _tick(engine: Engine, instance: DagsterInstance, cursor: str | None = None) -> SensorResult | SkipReason:
    context = build_sensor_context(
        instance=instance, cursor=cursor, resources={"batchly_db": BatchlyDatabase(database_url=_url(engine))}
    )
    result = sync_queue_sensor(context)
    assert isinstance(result, SensorResult | SkipReason)
    return result


def test_sensor_requests_one_tagged_run_per_connected_organisation_with_due_work(
    engine: Engine, org: int, books: Books
) -> None:
    instance = DagsterInstance.ephemeral()
    assert isinstance(_tick(engine, instance), SkipReason)  # nothing due
    with engine.begin() as conn:
        f.customer(conn, org)
        f.customer(conn, org, display_name="Second")
        unconnected = f.organization(conn, "No QuickBooks yet")
        f.customer(conn, unconnected)

    first = _tick(engine, instance)

    assert isinstance(first, SensorResult) and first.run_requests is not None
    [request] = first.run_requests
    assert isinstance(request, RunRequest)
    assert request.tags == {REALM_TAG: books.realm_id, ORGANIZATION_TAG: str(org)}
    assert request.run_config == {"ops": {"push_records": {"config": {"organization_id": org}}}}
    max_id = SyncQueue(engine).due_by_organization()[org][1]
    assert request.run_key == f"push-org{org}-upto{max_id}-1"
    assert json.loads(first.cursor or "") == {str(org): 1}

    second = _tick(engine, instance, first.cursor)  # still due: a new, distinct run key
    assert isinstance(second, SensorResult) and second.run_requests is not None
    assert [r.run_key for r in second.run_requests if isinstance(r, RunRequest)] == [
        f"push-org{org}-upto{max_id}-2"
    ]

    instance.add_run(
        DagsterRun(
            job_name=push_to_quickbooks.name,
            status=DagsterRunStatus.STARTED,
            tags={ORGANIZATION_TAG: str(org)},
        )
    )
    assert isinstance(_tick(engine, instance, second.cursor), SkipReason)  # that run keeps claiming


def test_sensor_ignores_rows_waiting_for_their_backoff(engine: Engine, org: int) -> None:
    with engine.begin() as conn:
        customer = f.customer(conn, org)
    queue = SyncQueue(engine)
    [item] = queue.claim("w", limit=1, lease=timedelta(minutes=1))
    queue.fail(item, "503")
    assert queue_status(engine, "customer", customer)[0] == "pending"
    assert isinstance(_tick(engine, DagsterInstance.ephemeral()), SkipReason)


def test_real_definitions_wire_the_push() -> None:
    sensor = defs.resolve_sensor_def("sync_queue_sensor")
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds is not None and sensor.minimum_interval_seconds <= 30
    job = defs.resolve_job_def("push_to_quickbooks")
    assert job.graph.node_named("push_records").definition.pools == {"qbo_api"}
    assert set(job.required_resource_keys) >= {"batchly_db", "quickbooks"}


def test_an_unconnected_organisation_fails_the_run_with_what_to_do(engine: Engine, environment: None) -> None:
    with engine.begin() as conn:
        org = f.organization(conn, "Not connected")

    result = push_to_quickbooks.execute_in_process(
        run_config={"ops": {"push_records": {"config": {"organization_id": org}}}},
        resources={
            "batchly_db": BatchlyDatabase(database_url=_url(engine)),
            "quickbooks": QuickBooksResource(database_url=_url(engine), time_scale=TIME_SCALE),
        },
        raise_on_error=False,
    )

    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    data = failure.step_failure_data
    assert data.user_failure_data is not None  # a deliberate Failure, not a traceback; not retried
    assert f"batchly-sync connect --org {org}" in (data.user_failure_data.description or "")
