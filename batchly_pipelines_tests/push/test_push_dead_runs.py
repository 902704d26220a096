"""A killed push run never holds its company: ``sync_queue_sensor`` fails a STARTED push run whose process is gone
(its realm push lock lapsed, or its run worker's process no longer exists) and starts the company's next push."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    RunRequest,
    SensorResult,
    SkipReason,
    build_sensor_context,
    instance_for_test,
)
from dagster._core.events import EngineEventData
from sqlalchemy.engine import Engine

from batchly_pipelines.defs.push.job import push_to_quickbooks
from batchly_pipelines.defs.push.sensor import ORGANIZATION_TAG, REALM_TAG, sync_queue_sensor
from batchly_pipelines.defs.resources import BatchlyDatabase
from batchly_pipelines.store import push_locks
from batchly_pipelines.store import schema as s
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.push import Books

LEASE = timedelta(minutes=2)


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    """A Dagster instance with the default run launcher, as ``dagster dev`` runs it."""
    with instance_for_test() as dagster_instance:
        yield dagster_instance


def _tick(engine: Engine, instance: DagsterInstance) -> SensorResult | SkipReason:
    context = build_sensor_context(
        instance=instance,
        resources={
            "batchly_db": BatchlyDatabase(database_url=engine.url.render_as_string(hide_password=False))
        },
    )
    result = sync_queue_sensor(context)
    assert isinstance(result, SensorResult | SkipReason)
    return result


def _started_push_run(
    instance: DagsterInstance, org: int, realm_id: str, pid: int | None = None
) -> DagsterRun:
    run = instance.add_run(
        DagsterRun(
            job_name=push_to_quickbooks.name,
            status=DagsterRunStatus.STARTED,
            tags={REALM_TAG: realm_id, ORGANIZATION_TAG: str(org)},
        )
    )
    if pid is not None:  # what the run worker logs when it starts
        instance.report_engine_event(
            f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid)
        )
    return run


def _lock_owner(run: DagsterRun) -> str:
    return f"run-{run.run_id[:8]}-0badc0de-4242-worker-host"  # what push_to_quickbooks names its worker


def _failure_message(instance: DagsterInstance, run: DagsterRun) -> str:
    [event] = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)
    return event.message


def _requested_organisations(result: SensorResult | SkipReason) -> list[str]:
    assert isinstance(result, SensorResult) and result.run_requests is not None
    return [r.tags[ORGANIZATION_TAG] for r in result.run_requests if isinstance(r, RunRequest)]


def test_a_started_push_run_whose_lock_lapsed_is_failed_and_its_company_pushed_again(
    engine: Engine, org: int, books: Books, instance: DagsterInstance
) -> None:
    # Its pid still lives (this process): the lapsed lock is what tells.
    dead = _started_push_run(instance, org, books.realm_id, pid=os.getpid())
    assert push_locks.acquire(engine, books.realm_id, _lock_owner(dead), org, LEASE) is None
    with engine.begin() as conn:  # the run stopped renewing it: its lease ran out half a minute ago
        lapsed = sa.update(s.qbo_push_locks).values(expires_at=datetime.now(UTC) - timedelta(seconds=30))
        conn.execute(lapsed)
    with engine.begin() as conn:
        f.customer(conn, org)  # due work for the company

    result = _tick(engine, instance)

    failed = instance.get_run_by_id(dead.run_id)
    assert failed is not None and failed.status == DagsterRunStatus.FAILURE
    message = _failure_message(instance, dead)
    assert f"push lock of QuickBooks company {books.realm_id}" in message and "lapsed" in message
    assert _requested_organisations(result) == [str(org)]  # the company's next push starts at once


def test_a_push_run_whose_worker_process_is_gone_is_failed_after_its_lock_was_taken_over(
    engine: Engine, org: int, books: Books, instance: DagsterInstance
) -> None:
    worker = subprocess.Popen([sys.executable, "-c", "pass"])
    # Exited and not reaped yet: a zombie, as a killed run worker is until its parent collects it.
    os.waitid(os.P_PID, worker.pid, os.WEXITED | os.WNOWAIT)
    try:
        dead = _started_push_run(instance, org, books.realm_id, pid=worker.pid)
        # A CLI push took the lock over once the dead run's lease lapsed: the lock no longer says anything about it.
        assert push_locks.acquire(engine, books.realm_id, "cli-1234abcd-99-laptop", org, LEASE) is None

        _tick(engine, instance)
    finally:
        worker.wait()

    failed = instance.get_run_by_id(dead.run_id)
    assert failed is not None and failed.status == DagsterRunStatus.FAILURE
    assert f"run worker (process {worker.pid}) is gone" in _failure_message(instance, dead)


def test_a_live_push_run_keeps_its_company(
    engine: Engine, org: int, books: Books, instance: DagsterInstance
) -> None:
    holding = _started_push_run(instance, org, books.realm_id, pid=os.getpid())
    assert push_locks.acquire(engine, books.realm_id, _lock_owner(holding), org, LEASE) is None
    # Another company's run that has not taken its lock yet (waiting for a pool slot, say).
    waiting = _started_push_run(instance, org + 1000, "other-realm", pid=os.getpid())
    with engine.begin() as conn:
        f.customer(conn, org)

    assert isinstance(_tick(engine, instance), SkipReason)  # the live run keeps claiming

    for run in (holding, waiting):
        alive = instance.get_run_by_id(run.run_id)
        assert alive is not None and alive.status == DagsterRunStatus.STARTED
