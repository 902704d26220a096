"""The Dagster side: ``push_to_quickbooks`` in process, ``sync_queue_sensor`` ticks, the real definitions."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import (
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    ExecuteInProcessResult,
    RunRequest,
    SensorResult,
    SkipReason,
    build_sensor_context,
)
from sqlalchemy.engine import Engine

from batchly_pipelines.definitions import defs
from batchly_pipelines.defs.push.job import push_to_quickbooks
from batchly_pipelines.defs.push.sensor import BATCH_TAG, ORGANIZATION_TAG, REALM_TAG, sync_queue_sensor
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
    # a batch of one organisation (test_sensor_batched.py: many), tagged with its realm like a "Sync now" run
    assert request.tags == {REALM_TAG: books.realm_id, ORGANIZATION_TAG: str(org), BATCH_TAG: "1"}
    assert request.run_config == {"ops": {"push_records": {"config": {"organization_ids": [org]}}}}
    max_id = SyncQueue(engine).due_by_organization()[org][1]
    assert request.run_key == f"push-batch1-org{org}-1-upto{max_id}"
    assert json.loads(first.cursor or "") == {"batches": 1}

    second = _tick(engine, instance, first.cursor)  # still due: a new, distinct run key
    assert isinstance(second, SensorResult) and second.run_requests is not None
    assert [r.run_key for r in second.run_requests if isinstance(r, RunRequest)] == [
        f"push-batch2-org{org}-1-upto{max_id}"
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


def _resources(engine: Engine) -> dict[str, Any]:
    return {
        "batchly_db": BatchlyDatabase(database_url=_url(engine)),
        "quickbooks": QuickBooksResource(database_url=_url(engine), time_scale=TIME_SCALE),
    }


def _push_run(engine: Engine, instance: DagsterInstance, **config: Any) -> ExecuteInProcessResult:
    return push_to_quickbooks.execute_in_process(
        run_config={"ops": {"push_records": {"config": {"linger_seconds": 0.0, **config}}}},
        resources=_resources(engine),
        instance=instance,
        raise_on_error=False,
    )


def _failure(result: ExecuteInProcessResult) -> tuple[str, dict[str, Any]]:
    """The push step's deliberate Failure: its description and metadata."""
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    data = failure.step_failure_data.user_failure_data
    assert data is not None  # a Failure raised on purpose, not a traceback
    return data.description or "", dict(data.metadata)


def _rows(value: Any) -> list[dict[str, Any]]:
    return [dict(record.data) for record in value.records]


def _log_lines(instance: DagsterInstance, result: ExecuteInProcessResult, level: int) -> list[str]:
    return [e.user_message for e in instance.all_logs(result.run_id) if e.level == level and e.user_message]


def test_a_push_with_a_refused_invoice_fails_after_pushing_the_good_ones_and_names_the_record(
    engine: Engine, org: int, books: Books, environment: None
) -> None:
    with engine.begin() as conn:
        customer = f.customer(conn, org)
        item = f.item(conn, org)
        good = f.invoice(conn, org, customer, item, doc_number="GOOD-1")
        bad = f.invoice(conn, org, customer, item, doc_number="BAD-1", lines=0)
    instance = DagsterInstance.ephemeral()

    result = _push_run(engine, instance, organization_id=org)

    assert not result.success
    assert list(books.by_doc_number()) == ["GOOD-1"]  # the good one went through and was checkpointed
    assert queue_status(engine, "invoice", good)[0] == "done"
    assert queue_status(engine, "invoice", bad)[0] == "dead"
    description, metadata = _failure(result)
    assert f"invoice {bad} (BAD-1)" in description and "1 record(s) failed" in description
    assert _rows(metadata["failed records"]) == [
        {
            "entity_type": "invoice",
            "id": bad,
            "name": "BAD-1",
            "field": "lines",
            "message": "an invoice needs at least one line",
            "queue": "dead",
        }
    ]
    assert metadata["succeeded"].value == 3 and metadata["failed"].value == 1
    [error] = [line for line in _log_lines(instance, result, logging.ERROR) if f"invoice {bad}" in line]
    assert "BAD-1" in error and "an invoice needs at least one line" in error


def test_sync_now_by_doc_number_reports_each_invoice_and_fails_on_unknown_and_dead_ones(
    engine: Engine, org: int, books: Books, environment: None
) -> None:
    with engine.begin() as conn:
        customer = f.customer(conn, org)
        item = f.item(conn, org)
        synced = f.invoice(conn, org, customer, item, doc_number="DONE-1")
        dead = f.invoice(conn, org, customer, item, doc_number="DEAD-1", lines=0)
        now = f.invoice(conn, org, customer, item, doc_number="NOW-1")
        elsewhere = f.organization(conn, "Another company")
        theirs = f.invoice(conn, elsewhere, f.customer(conn, elsewhere), f.item(conn, elsewhere), "THEIRS-1")
    instance = DagsterInstance.ephemeral()
    assert not _push_run(engine, instance, organization_id=org, invoice_ids=[synced, dead]).success

    result = _push_run(
        engine,
        instance,
        organization_id=org,
        doc_numbers=[" NOW-1 ", "DONE-1", "DEAD-1", "NOPE-9"],
        invoice_ids=[theirs],
    )

    assert not result.success
    assert sorted(books.by_doc_number()) == ["DONE-1", "NOW-1"]
    description, metadata = _failure(result)
    report = {row["requested"]: row for row in _rows(metadata["invoices"])}
    assert {requested: row["outcome"] for requested, row in report.items()} == {
        "NOW-1": "pushed",
        "DONE-1": "already synced",
        "DEAD-1": "dead",
        "NOPE-9": "unknown",
        f"id {theirs}": "unknown",
    }
    assert report["NOW-1"]["id"] == now and report["NOW-1"]["qbo_id"]
    assert "lines: an invoice needs at least one line" in report["DEAD-1"]["detail"]
    assert "retry_dead_letter" in report["DEAD-1"]["detail"]
    assert f"organisation {org}" in report["NOPE-9"]["detail"]
    assert "NOPE-9" in description and "DEAD-1" in description
    lines = _log_lines(instance, result, logging.INFO) + _log_lines(instance, result, logging.ERROR)
    for requested in ("NOW-1", "DONE-1", "DEAD-1", "NOPE-9"):
        assert any(requested in line for line in lines), requested


def test_sync_now_of_invoices_that_all_go_through_succeeds_with_the_report(
    engine: Engine, org: int, books: Books, environment: None
) -> None:
    with engine.begin() as conn:
        invoice = f.invoice(conn, org, f.customer(conn, org), f.item(conn, org), doc_number="OK-1")

    result = _push_run(engine, DagsterInstance.ephemeral(), organization_id=org, doc_numbers=["OK-1"])

    assert result.success
    [materialized] = [
        e.step_output_data.metadata for e in result.all_events if e.event_type_value == "STEP_OUTPUT"
    ][:1]
    assert [(r["id"], r["outcome"]) for r in _rows(materialized["invoices"])] == [(invoice, "pushed")]


def test_the_launchpad_scaffolds_typed_push_config_and_no_resource_settings() -> None:
    schema = defs.resolve_job_def("push_to_quickbooks").run_config_schema.config_type
    resources = schema.fields["resources"].config_type.fields  # type: ignore[attr-defined]
    for key in ("batchly_db", "quickbooks"):
        resource_config = resources[key].config_type.fields["config"].config_type
        assert resource_config.fields == {}, f"{key} takes settings from run config"
    push_config = (
        schema.fields["ops"]
        .config_type.fields["push_records"]
        .config_type.fields["config"]
        .config_type.fields  # type: ignore[attr-defined]
    )
    # Sync now names one organisation; the sensor's batches name organization_ids instead
    assert not push_config["organization_id"].is_required
    assert push_config["organization_ids"].config_type.key == "Noneable.Array.IntSourceType"
    assert push_config["doc_numbers"].config_type.key == "Noneable.Array.StringSourceType"
    assert push_config["invoice_ids"].config_type.key == "Noneable.Array.IntSourceType"
    assert not push_config["doc_numbers"].is_required and not push_config["invoice_ids"].is_required


def test_a_database_that_cannot_be_reached_fails_the_run_with_a_sentence_naming_the_organisation(
    environment: None,
) -> None:
    unreachable = "postgresql+psycopg2://postgres@127.0.0.1:9/batchly"  # nothing listens on the discard port
    result = push_to_quickbooks.execute_in_process(
        run_config={"ops": {"push_records": {"config": {"organization_id": 41, "linger_seconds": 0.0}}}},
        resources={
            "batchly_db": BatchlyDatabase(database_url=unreachable),
            "quickbooks": QuickBooksResource(database_url=unreachable, time_scale=TIME_SCALE),
        },
        raise_on_error=False,
    )

    assert not result.success
    description, metadata = _failure(result)  # a deliberate Failure, not a traceback
    assert description.startswith(
        "push of organisation 41 did not run to the end: the database did not answer"
    )
    assert "Traceback" not in description and "\n" not in description
    assert metadata["organization_id"].value == 41


def test_a_database_that_goes_away_during_the_push_fails_the_run_with_a_sentence(
    engine: Engine, org: int, books: Books, environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batchly_pipelines.services.push import organization as push_module

    def gone(*args: object, **kwargs: object) -> object:
        raise sa.exc.OperationalError("SELECT invoice_lines", {}, Exception("server closed the connection"))

    with engine.begin() as conn:
        f.invoice(conn, org, f.customer(conn, org), f.item(conn, org), doc_number="DB-1")
    monkeypatch.setattr(push_module, "load_invoice_lines", gone)
    monkeypatch.setattr(push_module, "FENCE_RETRY_SECONDS", 0.01)

    result = _push_run(engine, DagsterInstance.ephemeral(), organization_id=org)

    assert not result.success
    description, metadata = _failure(result)
    assert description == (
        f"push of organisation {org} did not run to the end: the database did not answer (OperationalError: "
        "server closed the connection); what was pushed is recorded, the rest returns to the queue when its lease "
        "lapses — try again"
    )
    assert metadata["organization_id"].value == org
    assert books.objects("Invoice") == []  # nothing was sent unrecorded
