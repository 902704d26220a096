"""Batched pushes: ``sync_queue_sensor`` asks for one ``push_to_quickbooks`` run per batch of organisations with due
work, not one per organisation; inside the run each organisation is pushed on its own — one failing is reported
against it (the run red) while the others push, one whose realm is busy is left for the next run, not failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    ExecuteInProcessResult,
    RunRequest,
    SensorResult,
    SkipReason,
    build_sensor_context,
    instance_for_test,
)
from dagster._core.events import EngineEventData
from sqlalchemy.engine import Engine

from batchly_pipelines.defs.push.job import push_to_quickbooks
from batchly_pipelines.defs.push.sensor import BATCH_TAG, ORGANIZATION_TAG, REALM_TAG, sync_queue_sensor
from batchly_pipelines.defs.resources import BatchlyDatabase, QuickBooksResource
from batchly_pipelines.quickbooks.errors import ServerError
from batchly_pipelines.services.push.checkpoint import Checkpointer
from batchly_pipelines.services.push.invoices import InvoicePusher
from batchly_pipelines.settings import Settings
from batchly_pipelines.store import push_locks
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.push import TIME_SCALE, Books, connect, queue_status
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxServer


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture
def companies(
    engine: Engine, settings: Settings, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[int, Books]]:
    """Three organisations, each connected to a fresh realm of its own; a failed organisation is retried at once."""
    monkeypatch.setenv("BATCHLY_COMPANY_RETRY_S", "0.05")
    admin = SandboxAdmin(sandbox.base_url)
    found = []
    for n in range(3):
        with engine.begin() as conn:
            org = f.organization(conn, f"Batch Company {n}")
        realm = admin.new_realm()
        connect(engine, settings, org, realm)
        found.append((org, Books(sandbox, realm)))
    return found


def _tick(engine: Engine, instance: DagsterInstance, cursor: str | None = None) -> SensorResult | SkipReason:
    context = build_sensor_context(
        instance=instance, cursor=cursor, resources={"batchly_db": BatchlyDatabase(database_url=_url(engine))}
    )
    result = sync_queue_sensor(context)
    assert isinstance(result, SensorResult | SkipReason)
    return result


def _requests(result: SensorResult | SkipReason) -> list[RunRequest]:
    assert isinstance(result, SensorResult) and result.run_requests is not None
    return [r for r in result.run_requests if isinstance(r, RunRequest)]


def _batch(request: RunRequest) -> list[int]:
    return list(request.run_config["ops"]["push_records"]["config"]["organization_ids"])


def test_the_sensor_asks_for_one_run_per_batch_of_organisations_with_due_work(
    engine: Engine, companies: list[tuple[int, Books]], monkeypatch: pytest.MonkeyPatch
) -> None:
    orgs = [org for org, _ in companies]
    with engine.begin() as conn:
        for org in orgs:
            f.customer(conn, org)
        unconnected = f.organization(conn, "No QuickBooks yet")
        f.customer(conn, unconnected)
    instance = DagsterInstance.ephemeral()

    once = _tick(engine, instance)
    [request] = _requests(once)  # three organisations, one run

    assert _batch(request) == orgs
    assert request.tags == {BATCH_TAG: "3"}  # many realms: the realm lock keeps one push per company
    assert request.run_key is not None and request.run_key.startswith(f"push-batch1-org{orgs[0]}-3-upto")

    monkeypatch.setenv("BATCHLY_NIGHTLY_BATCH", "2")
    assert isinstance(once, SensorResult)
    first = _tick(engine, instance, once.cursor)
    assert [_batch(r) for r in _requests(first)] == [orgs[:2], orgs[2:]]
    assert isinstance(first, SensorResult) and json.loads(first.cursor or "") == {"batches": 3}
    [single] = _requests(first)[1:]
    assert single.tags == {
        BATCH_TAG: "1",
        REALM_TAG: companies[2][1].realm_id,
        ORGANIZATION_TAG: str(orgs[2]),
    }

    # organisations a queued or running push holds (a batch by its config, a "Sync now" run by its tag) are left out
    instance.add_run(
        DagsterRun(
            job_name=push_to_quickbooks.name,
            status=DagsterRunStatus.STARTED,
            run_config={"ops": {"push_records": {"config": {"organization_ids": [orgs[0]]}}}},
        )
    )
    instance.add_run(
        DagsterRun(
            job_name=push_to_quickbooks.name,
            status=DagsterRunStatus.STARTING,
            tags={ORGANIZATION_TAG: str(orgs[2])},
        )
    )
    assert [_batch(r) for r in _requests(_tick(engine, instance, first.cursor))] == [[orgs[1]]]


def _run(engine: Engine, organization_ids: list[int]) -> tuple[ExecuteInProcessResult, DagsterInstance]:
    instance = DagsterInstance.ephemeral()
    result = push_to_quickbooks.execute_in_process(
        run_config={"ops": {"push_records": {"config": {"organization_ids": organization_ids}}}},
        resources={
            "batchly_db": BatchlyDatabase(database_url=_url(engine)),
            "quickbooks": QuickBooksResource(database_url=_url(engine), time_scale=TIME_SCALE),
        },
        instance=instance,
        raise_on_error=False,
    )
    return result, instance


def _failure(result: ExecuteInProcessResult) -> tuple[str, dict[str, Any]]:
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    data = failure.step_failure_data.user_failure_data
    assert data is not None  # a Failure raised on purpose, not a traceback
    return data.description or "", dict(data.metadata)


def _due_work(engine: Engine, org: int, doc_number: str) -> tuple[int, int]:
    """A new customer and an invoice for it: the customer id and the invoice id."""
    with engine.begin() as conn:
        customer = f.customer(conn, org, display_name=f"Customer of {doc_number}")
        item = f.item(conn, org, name=f"Item of {doc_number}")
        return customer, f.invoice(conn, org, customer, item, doc_number=doc_number)


def test_one_organisation_failing_is_reported_against_it_while_the_others_push(
    engine: Engine, companies: list[tuple[int, Books]], environment: None
) -> None:
    (good, good_books), (bad, bad_books), (other, other_books) = companies
    invoices = {org: _due_work(engine, org, f"INV-{org}")[1] for org in (good, bad, other)}
    bad_books.faults(error_500=1.0)  # its QuickBooks answers 500 to everything

    result, _ = _run(engine, [good, bad, other])

    assert not result.success  # red: an organisation failed
    assert list(good_books.by_doc_number()) == [f"INV-{good}"]
    assert list(other_books.by_doc_number()) == [f"INV-{other}"]
    assert bad_books.objects("Invoice") == []
    assert queue_status(engine, "invoice", invoices[good])[0] == "done"
    assert queue_status(engine, "invoice", invoices[other])[0] == "done"
    assert queue_status(engine, "invoice", invoices[bad])[0] in ("pending", "dead")  # retried later
    description, metadata = _failure(result)
    assert description.startswith("1 of 3 organisation(s) failed")
    assert f"organisation {bad} (Batch Company 1)" in description
    [row] = [dict(r.data) for r in metadata["failed organizations"].value.records]
    assert row["organization_id"] == bad and row["organization"] == "Batch Company 1"
    assert row["reason"] and (f"INV-{bad}" in row["records"] or "customer" in row["records"])
    assert metadata["organizations_pushed"].value == 2 and metadata["organizations_failed"].value == 1


def test_an_organisation_whose_realm_is_busy_is_left_for_the_next_run_not_failed(
    engine: Engine, companies: list[tuple[int, Books]], environment: None
) -> None:
    (free, free_books), (busy, busy_books), _ = companies
    _, free_invoice = _due_work(engine, free, "FREE-1")
    busy_customer, busy_invoice = _due_work(engine, busy, "BUSY-1")
    # a CLI push of the busy organisation's company holds its realm's push lock
    assert (
        push_locks.acquire(engine, busy_books.realm_id, "cli-1234abcd-99-laptop", busy, timedelta(minutes=5))
        is None
    )

    result, _ = _run(engine, [free, busy])

    assert result.success  # skipped is not failed
    assert list(free_books.by_doc_number()) == ["FREE-1"]
    assert queue_status(engine, "invoice", free_invoice)[0] == "done"
    assert busy_books.objects("Invoice") == [] and busy_books.objects("Customer") == []
    for entity, record in (("invoice", busy_invoice), ("customer", busy_customer)):
        assert queue_status(engine, entity, record) == ("pending", None)  # untouched: the next batch takes it
    summary = result.output_for_node("push_records")
    assert summary["pushed"] == [free] and summary["skipped"] == [busy] and summary["failed"] == []
    with engine.connect() as conn:
        attempts = conn.execute(
            sa.select(s.sync_queue.c.attempts).where(s.sync_queue.c.organization_id == busy)
        ).scalars()
        assert set(attempts) == {0}


def test_a_batch_run_whose_process_is_gone_is_failed_and_its_organisations_batched_again(
    engine: Engine, companies: list[tuple[int, Books]]
) -> None:
    orgs = [org for org, _ in companies]
    with engine.begin() as conn:
        for org in orgs:
            f.customer(conn, org)
    worker = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(
        os.P_PID, worker.pid, os.WEXITED | os.WNOWAIT
    )  # exited, not reaped: a zombie, as a killed run worker
    with instance_for_test() as instance:  # the default run launcher, as dagster dev runs it
        try:
            dead = instance.add_run(
                DagsterRun(
                    job_name=push_to_quickbooks.name,
                    status=DagsterRunStatus.STARTED,
                    run_config={"ops": {"push_records": {"config": {"organization_ids": orgs}}}},
                    tags={BATCH_TAG: "3"},
                )
            )
            instance.report_engine_event(
                f"Started process for run (pid: {worker.pid}).", dead, EngineEventData.in_process(worker.pid)
            )

            [request] = _requests(_tick(engine, instance))
        finally:
            worker.wait()

        failed = instance.get_run_by_id(dead.run_id)
        assert failed is not None and failed.status == DagsterRunStatus.FAILURE
        [event] = instance.all_logs(dead.run_id, of_type=DagsterEventType.RUN_FAILURE)
        assert "of a batch of 3 organisations is dead" in event.message
        assert f"run worker (process {worker.pid}) is gone" in event.message
        assert _batch(request) == orgs  # its organisations are no longer held: the next batch has them


def test_an_organisation_whose_push_is_taken_over_is_failed_and_what_it_pushed_counts(
    engine: Engine, companies: list[tuple[int, Books]], environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker takes the realm's lock while the organisation's push runs (its own was paused past its lease):
    the push stops before writing again, and its retry finds the realm busy. Before, the retry's "skipped" replaced
    the first attempt: the run was green, said nothing of the lost lease and counted nothing of what it had pushed."""
    (taken, taken_books), (free, free_books), _ = companies
    customer, invoice = _due_work(engine, taken, "TAKEN-1")
    _due_work(engine, free, "FREE-1")
    write = Checkpointer.write

    def then_taken_over(self: Checkpointer, outcomes: Any, queue_items: Any) -> Any:
        result = write(self, outcomes, queue_items)
        if self.organization_id == taken and any(o.entity_type == "customer" for o in outcomes):
            with (
                engine.begin() as conn
            ):  # the intruder's lock, as a takeover after an expired lease writes it
                conn.execute(
                    sa.update(s.qbo_push_locks)
                    .where(s.qbo_push_locks.c.realm_id == taken_books.realm_id)
                    .values(owner="intruder-1234abcd-1-elsewhere", expires_at=utcnow() + timedelta(minutes=5))
                )
        return result

    monkeypatch.setattr(Checkpointer, "write", then_taken_over)

    result, _ = _run(engine, [taken, free])

    assert not result.success
    assert list(free_books.by_doc_number()) == ["FREE-1"]
    assert [c["DisplayName"] for c in taken_books.objects("Customer")] == ["Customer of TAKEN-1"]
    assert taken_books.objects("Invoice") == []
    description, metadata = _failure(result)
    assert f"organisation {taken} (Batch Company 0)" in description
    [row] = [dict(r.data) for r in metadata["failed organizations"].value.records]
    assert "lost its lease" in row["reason"] and "another push" in row["reason"], row["reason"]
    assert "PushAbandoned" not in row["reason"] and "(at " not in row["reason"], row["reason"]
    # tried again at once, not after the fleet's pause (which holds the organisation)
    assert row["attempts"] == 1
    assert metadata["actions"].value["customer.create"] == 2  # the taken-over push's customer counts
    assert queue_status(engine, "customer", customer)[0] == "done"
    assert queue_status(engine, "invoice", invoice)[0] == "in_progress"  # until its lease lapses


def test_a_record_that_failed_once_and_was_pushed_by_the_same_run_does_not_fail_it(
    engine: Engine, companies: list[tuple[int, Books]], environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run is red when a record's last outcome in it is a failure, as a single organisation's run is — not when
    a chunk failed once and its records were pushed by the retry (the organisation was failed for its count of
    failures, which also counted those records)."""
    (org, books), _, _ = companies
    _, invoice = _due_work(engine, org, "ONCE-1")
    push = InvoicePusher.push
    failed: list[bool] = []

    def once(self: InvoicePusher, ids: Any, **options: Any) -> Any:
        if not failed:
            failed.append(True)
            raise ServerError("HTTP 503 from QuickBooks (retries exhausted)")
        return push(self, ids, **options)

    monkeypatch.setattr(InvoicePusher, "push", once)

    result, _ = _run(engine, [org])

    assert failed and result.success
    assert list(books.by_doc_number()) == ["ONCE-1"] and queue_status(engine, "invoice", invoice)[0] == "done"
    assert result.output_for_node("push_records")["failed"] == []
