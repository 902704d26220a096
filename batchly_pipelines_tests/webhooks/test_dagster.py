"""The Dagster side: ``webhook_inbox_sensor`` ticks (a run per realm with events, the due sweeps of the others in few
runs), ``pull_webhook_changes`` and ``sweep_webhook_realms`` in process."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
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
from batchly_pipelines.defs.webhooks import jobs, sensors
from batchly_pipelines.defs.webhooks.config import sweep_batch
from batchly_pipelines.defs.webhooks.jobs import (
    WEBHOOK_REALM_TAG,
    WEBHOOK_SWEEP_TAG,
    pull_webhook_changes,
    sweep_webhook_realms,
)
from batchly_pipelines.defs.webhooks.sensors import webhook_inbox_sensor
from batchly_pipelines.services.webhooks.receiver import create_app
from batchly_pipelines.services.webhooks.repair import sweeps_due
from batchly_pipelines.settings import SettingsError
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.connections import ConnectionStore
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines.store.webhook_repair import realm_repairs, record_receiver_start, save_sweep
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
from qbo_sandbox.admin_client import SandboxAdmin
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
    sweeps = defs.resolve_job_def("sweep_webhook_realms")
    assert sweeps.graph.node_named("sweep_cdc_realms").definition.pools == {"qbo_api"}
    assert set(sweeps.required_resource_keys) >= {"batchly_db", "quickbooks"}
    assert sweeps.executor_def.name == "in_process"
    assert {job.name for job in sensor.jobs} == {"pull_webhook_changes", "sweep_webhook_realms"}


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


def _sweep_requests(result: SensorResult | SkipReason) -> list[RunRequest]:
    return [r for r in _requests(result) if r.job_name == sweep_webhook_realms.name]


def _pull_requests(result: SensorResult | SkipReason) -> list[RunRequest]:
    return [r for r in _requests(result) if r.job_name == pull_webhook_changes.name]


def _realms(request: RunRequest) -> list[str]:
    return request.run_config["ops"]["sweep_cdc_realms"]["config"]["realm_ids"]


def _sweep_run(instance: DagsterInstance, realm_ids: list[str], status: DagsterRunStatus) -> None:
    """A ``sweep_webhook_realms`` run of the realms in the instance, as the sensor requests it."""
    request = sensors.sweep_run_request(realm_ids, f"test-{'-'.join(realm_ids)}")
    instance.add_run(
        DagsterRun(
            job_name=sweep_webhook_realms.name,
            status=status,
            run_config=request.run_config,
            tags=request.tags,
        )
    )


def test_a_sweep_is_requested_for_a_realm_never_swept_and_at_once_after_a_receiver_start(
    company: Company, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    realm = company.qbo.realm_id
    first = _tick(company.engine, instance)
    [request] = _requests(first)
    assert (request.job_name, request.run_key, _realms(request)) == (
        sweep_webhook_realms.name,
        "webhook-sweeps-1-0",
        [realm],
    )
    assert request.tags == {WEBHOOK_SWEEP_TAG: "1"}
    _swept(company.engine, realm)
    assert isinstance(_tick(company.engine, instance), SkipReason)
    record_receiver_start(company.engine, "http://127.0.0.1:8767/webhooks/quickbooks")
    assert isinstance(first, SensorResult)
    assert [r.run_key for r in _sweep_requests(_tick(company.engine, instance, first.cursor))] == [
        "webhook-sweeps-2-0"
    ]
    _swept(company.engine, realm)
    monkeypatch.setenv("BATCHLY_WEBHOOK_REPAIR_MINUTES", "0.0001")  # due again 6 ms after the sweep
    time.sleep(
        0.05
    )  # a fast machine posts the event and ticks within those 6 ms (it did, under pytest-xdist)
    assert post_events(company, change(realm, "Customer", "1")) == 200
    [both] = _requests(
        _tick(company.engine, instance)
    )  # events pending: its own run drains them and sweeps it
    assert both.job_name == pull_webhook_changes.name
    assert both.run_key.startswith(f"webhooks-{realm}-upto")
    assert both.run_config["ops"]["pull_notified_changes"]["config"]["sweep"] is True


@pytest.mark.parametrize("value", ["0", "-3", "2.5", "many"])
def test_a_sweep_batch_that_is_not_a_whole_number_above_0_is_refused_naming_the_variable(value: str) -> None:
    assert (sweep_batch({}), sweep_batch({"BATCHLY_WEBHOOK_SWEEP_BATCH": " 40 "})) == (250, 40)
    with pytest.raises(SettingsError, match="BATCHLY_WEBHOOK_SWEEP_BATCH: expected realms per sweep run"):
        sweep_batch({"BATCHLY_WEBHOOK_SWEEP_BATCH": value})


def test_the_due_sweeps_of_realms_with_nothing_pending_are_a_few_runs_and_never_requested_twice(
    company: Company,
    another_company: Callable[[], Company],
    instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BATCHLY_WEBHOOK_SWEEP_BATCH", "2")
    realms = sorted([company.qbo.realm_id] + [another_company().qbo.realm_id for _ in range(4)])
    first = _tick(company.engine, instance)
    requests = _requests(first)
    assert len(requests) == math.ceil(len(realms) / 2) == 3
    assert all(r.job_name == sweep_webhook_realms.name for r in requests)
    assert [_realms(r) for r in requests] == [realms[0:2], realms[2:4], realms[4:]]
    assert [r.tags[WEBHOOK_SWEEP_TAG] for r in requests] == ["2", "2", "1"]
    assert len({r.run_key for r in requests}) == 3
    assert isinstance(first, SensorResult) and json.loads(first.cursor or "") == {"sweeps": 1}

    # the runs are launched or under way: their realms are not requested again, not even when events arrive for one
    for request, status in zip(
        requests, [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTED] * 2, strict=False
    ):
        _sweep_run(instance, _realms(request), status)
    assert isinstance(_tick(company.engine, instance, first.cursor), SkipReason)
    assert post_events(company, change(company.qbo.realm_id, "Customer", "1")) == 200
    second = _tick(company.engine, instance, first.cursor)
    [drain] = _requests(second)  # the events get their own run, which leaves the sweep to the sweep run
    assert (
        drain.job_name == pull_webhook_changes.name and drain.tags[WEBHOOK_REALM_TAG] == company.qbo.realm_id
    )
    assert drain.run_config["ops"]["pull_notified_changes"]["config"]["sweep"] is False


def test_a_realm_with_events_gets_its_own_run_and_the_others_are_swept_in_batches(
    company: Company,
    another_company: Callable[[], Company],
    instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BATCHLY_WEBHOOK_SWEEP_BATCH", "2")
    others = sorted(another_company().qbo.realm_id for _ in range(3))
    realm = company.qbo.realm_id
    assert post_events(company, change(realm, "Customer", "1")) == 200
    result = _tick(company.engine, instance)
    [pull] = _pull_requests(result)
    assert pull.tags == {WEBHOOK_REALM_TAG: realm}
    assert pull.run_config["ops"]["pull_notified_changes"]["config"] == {"realm_id": realm, "sweep": True}
    assert [_realms(r) for r in _sweep_requests(result)] == [others[:2], others[2:]]


def test_the_realms_of_a_sweep_run_that_just_failed_wait_and_the_others_do_not(
    company: Company,
    another_company: Callable[[], Company],
    instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sweep run failed a moment ago for one of its realms (the others it swept are no longer due): that realm
    waits RETRY_AFTER_SECONDS, the sweeps of every other realm due are requested at once."""
    failed, other = company.qbo.realm_id, another_company().qbo.realm_id
    _sweep_run(instance, [failed], DagsterRunStatus.FAILURE)
    assert [_realms(r) for r in _requests(_tick(company.engine, instance))] == [[other]]
    _swept(company.engine, other)
    assert isinstance(_tick(company.engine, instance), SkipReason)
    monkeypatch.setattr(sensors, "RETRY_AFTER_SECONDS", 0.0)
    assert [_realms(r) for r in _requests(_tick(company.engine, instance))] == [[failed]]


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


def test_a_sweep_run_over_two_realms_keeps_the_sweep_of_one_and_fails_naming_the_other(
    company: Company,
    another_company: Callable[[], Company],
    instance: DagsterInstance,
    environment: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jobs, "RUNTIME", dataclasses.replace(jobs.RUNTIME, company_retry_s=0.01))
    down = another_company()
    customer = company.qbo.customer("Ada")
    company.pull()
    company.act("update_customer", customer_id=customer["Id"], fields={"Notes": "lost event"})
    SandboxAdmin(company.sandbox.base_url).set_faults(down.qbo.realm_id, error_500=1.0)
    realms = [company.qbo.realm_id, down.qbo.realm_id]
    url = _url(company.engine)
    result = sweep_webhook_realms.execute_in_process(
        run_config={"ops": {"sweep_cdc_realms": {"config": {"realm_ids": realms}}}},
        resources={
            "batchly_db": BatchlyDatabase(database_url=url),
            # the client's waits between its retries of a 500, compressed
            "quickbooks": QuickBooksResource(database_url=url, time_scale=1000.0),
        },
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    data = failure.event_specific_data
    message = data.error.message or ""  # type: ignore[union-attr]
    assert "the CDC sweep of 1 of 2 realm(s) failed" in message and down.qbo.realm_id in message
    assert company.qbo.realm_id not in message
    metadata = data.user_failure_data.metadata  # type: ignore[union-attr]
    assert set(metadata["failed_realms"].value) == {down.qbo.realm_id}
    assert (metadata["swept"].value, metadata["gaps"].value) == (1, 1)
    assert (
        company.row(s.customers, qbo_id=customer["Id"])["notes"] == "lost event"
    )  # the other's sweep is kept
    with company.engine.connect() as conn:
        assert set(realm_repairs(conn, realms)) == {company.qbo.realm_id}
    assert set(sweeps_due(company.engine)) == {down.qbo.realm_id}  # swept again by a later run
