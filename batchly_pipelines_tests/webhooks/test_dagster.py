"""The Dagster side: ``webhook_inbox_sensor`` ticks (one run per realm), ``pull_webhook_changes`` in process."""

from __future__ import annotations

import json
from typing import Any

import pytest
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
from starlette.applications import Starlette

from batchly_pipelines.definitions import defs
from batchly_pipelines.defs.resources import BatchlyDatabase, QuickBooksResource
from batchly_pipelines.defs.webhooks import sensors
from batchly_pipelines.defs.webhooks.jobs import WEBHOOK_REALM_TAG, pull_webhook_changes
from batchly_pipelines.defs.webhooks.sensors import webhook_inbox_sensor
from batchly_pipelines.services.webhooks.receiver import create_app
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.connections import ConnectionStore
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines.store.webhook_repair import record_receiver_start, save_sweep
from batchly_pipelines_tests.support import factories
from batchly_pipelines_tests.support.pull import Company
from batchly_pipelines_tests.support.sandbox_client import Qbo
from batchly_pipelines_tests.support.webhooks import (
    VERIFIER,
    change,
    cloudevents,
    connect,
    inbox,
    post,
    statuses,
)
from qbo_sandbox.server import SandboxServer
from qbo_sandbox.state import Event


@pytest.fixture
def instance() -> DagsterInstance:
    return DagsterInstance.ephemeral()


@pytest.fixture
def environment(company: Company, secret_key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment a Dagster run reads its settings from (``QuickBooksResource`` builds clients from it)."""
    for name, value in {
        "BATCHLY_DATABASE_URL": _url(company.engine),
        "BATCHLY_SECRET_KEY": secret_key,
        "QBO_ENVIRONMENT": "local",
        "QBO_BASE_URL": company.sandbox.base_url,
    }.items():
        monkeypatch.setenv(name, value)


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _tick(engine: Engine, instance: DagsterInstance, cursor: str | None = None) -> SensorResult | SkipReason:
    context = build_sensor_context(
        instance=instance, cursor=cursor, resources={"batchly_db": BatchlyDatabase(database_url=_url(engine))}
    )
    result = webhook_inbox_sensor(context)
    assert isinstance(result, SensorResult | SkipReason)
    return result


def _swept(engine: Engine, *realm_ids: str) -> None:
    """The realms were swept just now (no CDC sweep is due)."""
    with engine.begin() as conn:
        for realm_id in realm_ids:
            save_sweep(conn, realm_id, utcnow(), utcnow(), 0)


def _requests(result: SensorResult | SkipReason) -> list[RunRequest]:
    assert isinstance(result, SensorResult), result
    return [r for r in result.run_requests or [] if isinstance(r, RunRequest)]


def test_real_definitions_wire_the_webhook_pull() -> None:
    sensor = defs.resolve_sensor_def("webhook_inbox_sensor")
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds is not None and sensor.minimum_interval_seconds <= 10
    job = defs.resolve_job_def("pull_webhook_changes")
    assert job.graph.node_named("pull_notified_changes").definition.pools == {"qbo_api"}
    assert set(job.required_resource_keys) >= {"batchly_db", "quickbooks"}
    assert job.executor_def.name == "in_process"  # one op: no step process to start, seconds off every event


def test_a_mixed_realm_delivery_makes_one_tagged_run_per_realm(
    app: Starlette, company: Company, sandbox: SandboxServer, secret_key: str, instance: DagsterInstance
) -> None:
    engine = company.engine
    other = Qbo(sandbox)
    with engine.begin() as conn:
        second_org = factories.organization(conn, name="Second Ltd")
    connect(engine, second_org, other.realm_id, sandbox.base_url, secret_key)
    first_realm, second_realm = company.qbo.realm_id, other.realm_id
    _swept(engine, first_realm, second_realm)
    assert isinstance(_tick(engine, instance), SkipReason)  # nothing pending, no sweep due
    body = cloudevents(
        change(first_realm, "Customer", "1"),
        change(second_realm, "Invoice", "2"),
        change(first_realm, "Payment", "3", "Delete"),
        change("9999999999", "Customer", "4"),  # unknown: recorded, ignored, no run
        change(second_realm, "Item", "5"),
    )
    assert post(app, body).status == 200
    first = _tick(engine, instance)
    requests = _requests(first)
    assert sorted(r.tags[WEBHOOK_REALM_TAG] for r in requests) == sorted([first_realm, second_realm])
    for request in requests:
        realm = request.tags[WEBHOOK_REALM_TAG]
        config = {"realm_id": realm, "sweep": False}
        assert request.run_config == {"ops": {"pull_notified_changes": {"config": config}}}
        newest = max(r["id"] for r in inbox(engine) if r["realm_id"] == realm)
        assert request.run_key == f"webhooks-{realm}-upto{newest}-1"
    assert isinstance(first, SensorResult)
    assert json.loads(first.cursor or "") == {first_realm: 1, second_realm: 1}

    # a run in progress for one realm: only the other gets a (new, distinct) run
    instance.add_run(
        DagsterRun(
            job_name=pull_webhook_changes.name,
            status=DagsterRunStatus.STARTED,
            tags={WEBHOOK_REALM_TAG: first_realm},
        )
    )
    second = _tick(engine, instance, first.cursor)
    assert [(r.tags[WEBHOOK_REALM_TAG], r.run_key.rsplit("-", 1)[1]) for r in _requests(second)] == [
        (second_realm, "2")
    ]


def test_a_realm_whose_last_run_failed_waits_before_the_next(
    company: Company, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    realm = company.qbo.realm_id
    _swept(company.engine, realm)
    assert post_events(company, change(realm, "Customer", "1")) == 200
    instance.add_run(
        DagsterRun(
            job_name=pull_webhook_changes.name,
            status=DagsterRunStatus.FAILURE,
            tags={WEBHOOK_REALM_TAG: realm},
        )
    )
    assert isinstance(_tick(company.engine, instance), SkipReason)
    monkeypatch.setattr(sensors, "RETRY_AFTER_SECONDS", 0.0)
    assert [r.tags[WEBHOOK_REALM_TAG] for r in _requests(_tick(company.engine, instance))] == [realm]


def post_events(company: Company, *changes: Event) -> int:
    """Deliver changes to the receiver of the company's database; returns the answer's status."""
    return post(create_app(company.engine, VERIFIER), cloudevents(*changes)).status


def _run(company: Company, instance: DagsterInstance, realm_id: str, sweep: bool = False) -> Any:
    url = _url(company.engine)
    return pull_webhook_changes.execute_in_process(
        run_config={"ops": {"pull_notified_changes": {"config": {"realm_id": realm_id, "sweep": sweep}}}},
        resources={
            "batchly_db": BatchlyDatabase(database_url=url),
            "quickbooks": QuickBooksResource(database_url=url),
        },
        instance=instance,
        tags={WEBHOOK_REALM_TAG: realm_id},
        raise_on_error=False,
    )


def test_the_run_pulls_what_the_events_name_and_marks_them_done_with_its_run_id(
    company: Company, instance: DagsterInstance, environment: None
) -> None:
    customer = company.qbo.customer("Ada")
    realm = company.qbo.realm_id
    assert post_events(company, change(realm, "Customer", customer["Id"], "Create")) == 200
    result = _run(company, instance, realm)
    assert result.success
    assert company.row(s.customers, qbo_id=customer["Id"])["display_name"] == "Ada"
    [row] = inbox(company.engine)
    assert (row["status"], row["run_id"]) == ("done", result.run_id)
    [output] = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.event_specific_data.metadata  # type: ignore[union-attr]
    assert metadata["events"].value == 1 and metadata["api_calls"].value == 1
    assert metadata["reads_per_event"].value == 1.0


def test_a_run_that_cannot_pull_fails_and_leaves_the_events_pending(
    company: Company, instance: DagsterInstance, environment: None, secret_key: str
) -> None:
    realm = company.qbo.realm_id
    assert post_events(company, change(realm, "Customer", "1")) == 200
    with ConnectionStore(company.engine, secret_key).locked(company.org, realm) as row:
        row.set_status("needs_reauth", "refresh token refused")
    result = _run(company, instance, realm)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "re-authorised" in (failure.event_specific_data.error.message or "")  # type: ignore[union-attr]
    assert statuses(inbox(company.engine)) == ["pending"]


def test_a_sweep_is_requested_for_a_realm_never_swept_and_at_once_after_a_receiver_start(
    company: Company, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    realm = company.qbo.realm_id
    [first] = _requests(_tick(company.engine, instance))
    assert first.run_key == f"webhooks-{realm}-sweep-1"
    assert first.run_config["ops"]["pull_notified_changes"]["config"] == {"realm_id": realm, "sweep": True}
    _swept(company.engine, realm)
    assert isinstance(_tick(company.engine, instance), SkipReason)
    record_receiver_start(company.engine, "http://127.0.0.1:8767/webhooks/quickbooks")
    assert [r.run_key for r in _requests(_tick(company.engine, instance, json.dumps({realm: 1})))] == [
        f"webhooks-{realm}-sweep-2"
    ]
    _swept(company.engine, realm)
    monkeypatch.setenv("BATCHLY_WEBHOOK_REPAIR_MINUTES", "0.0001")  # due again at once
    assert post_events(company, change(realm, "Customer", "1")) == 200
    [both] = _requests(_tick(company.engine, instance))
    assert both.run_key.startswith(f"webhooks-{realm}-upto")
    assert both.run_config["ops"]["pull_notified_changes"]["config"]["sweep"] is True


def test_a_sweep_run_pulls_what_no_event_brought(
    company: Company, instance: DagsterInstance, environment: None
) -> None:
    customer = company.qbo.customer("Ada")
    company.pull()
    company.act("update_customer", customer_id=customer["Id"], fields={"Notes": "lost event"})
    result = _run(company, instance, company.qbo.realm_id, sweep=True)
    assert result.success
    assert company.row(s.customers, qbo_id=customer["Id"])["notes"] == "lost event"
    [output] = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.event_specific_data.metadata  # type: ignore[union-attr]
    assert metadata["sweep_gaps"].value == {"Customer": 1}
