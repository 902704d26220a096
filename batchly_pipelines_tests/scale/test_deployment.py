"""The multi-process deployment of docs/deployment.md, really started: a gRPC code server, the webserver and the
daemon as separate processes, Dagster's storage on PostgreSQL. The company sensor adds the organisation's partition,
a pull submitted through the webserver is queued (QueuedRunCoordinator), launched by the daemon through the code
server and succeeds; the run is in PostgreSQL; the queue's limits and run monitoring are the configured ones."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from batchly_pipelines.defs.partitions import company_key
from batchly_pipelines.store.db import create_engine
from batchly_pipelines_tests.conftest import PostgresServer
from batchly_pipelines_tests.scale.conftest import Connect
from batchly_pipelines_tests.support.deployment import LOCATION, Deployment
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxServer

TIMEOUT_S = 120.0  # < 60 s on a quiet machine; the shared one is often at a load of 6 on 2 cores
COMPANIES = """{ partitionSetsOrError(repositorySelector: {repositoryLocationName: "batchly_pipelines",
  repositoryName: "__repository__"}, pipelineName: "pull_customers") { ... on PartitionSets { results { name } } } }"""
PARTITIONS = (
    """{ assetNodeOrError(assetKey: {path: ["qbo_customers"]}) { ... on AssetNode { partitionKeys } } }"""
)
LAUNCH = """mutation($params: ExecutionParams!) { launchPipelineExecution(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } ... on RunConfigValidationInvalid { errors { message } } } }"""
RUN = """query($id: ID!) { runOrError(runId: $id) { ... on Run { status events: eventConnection { events {
  __typename } } } } }"""
INSTANCE = """{ instance { runQueuingSupported runQueueConfig { maxConcurrentRuns tagConcurrencyLimitsYaml }
  daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"""


@pytest.fixture
def dagster_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh PostgreSQL database for Dagster's own storage, as a psycopg2 URL."""
    url = postgres_server.create_database()
    assert make_url(url).drivername == "postgresql+psycopg2"
    yield url


def _until(check: Any, what: str, deadline: float) -> Any:
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_webserver_daemon_and_code_server_run_a_pull_on_postgres_storage(
    engine: Engine, connect: Connect, sandbox: SandboxServer, dagster_database: str, tmp_path: Path
) -> None:
    org, realm = connect("Acme Ltd")
    SandboxAdmin(sandbox.base_url).seed(realm, customers=5, items=0, invoices=0, payments=0, days=2)
    env = {"BATCHLY_DATABASE_URL": engine.url.render_as_string(hide_password=False)}
    started = time.monotonic()
    with Deployment(tmp_path / "dagster_home", dagster_database, env) as deployment:
        deadline = started + TIMEOUT_S
        key = company_key(org, "Acme Ltd")
        _until(
            lambda: key in deployment.graphql(PARTITIONS)["assetNodeOrError"]["partitionKeys"],
            "the company sensor (in the daemon) to add the company",
            deadline,
        )
        params = {
            "selector": {
                "repositoryLocationName": LOCATION,
                "repositoryName": "__repository__",
                "jobName": "pull_customers",
            },
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": key}]},
            "runConfigData": {},
        }
        launched = deployment.graphql(LAUNCH, {"params": params})["launchPipelineExecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]

        def finished() -> dict[str, Any] | None:
            run = deployment.graphql(RUN, {"id": run_id})["runOrError"]
            return run if run["status"] in ("SUCCESS", "FAILURE", "CANCELED") else None

        run = _until(finished, "the pull run", deadline)
        instance = deployment.graphql(INSTANCE)["instance"]
        assert set(deployment.pids()) == {"code-server", "webserver", "daemon"}
        assert len(set(deployment.pids().values())) == 3

    assert run["status"] == "SUCCESS"
    kinds = [e["__typename"] for e in run["events"]["events"]]
    # through the queue: enqueued by the webserver, launched (starting) by the daemon's run coordinator
    assert kinds.index("RunEnqueuedEvent") < kinds.index("RunStartingEvent")
    assert instance["runQueuingSupported"]
    queue = instance["runQueueConfig"]
    assert queue["maxConcurrentRuns"] == 8 and "batchly/realm" in queue["tagConcurrencyLimitsYaml"]
    daemons = {d["daemonType"]: d for d in instance["daemonHealth"]["allDaemonStatuses"] if d["required"]}
    assert {"SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR", "MONITORING"} <= set(daemons)
    assert all(d["healthy"] for d in daemons.values())
    storage = create_engine(dagster_database)
    with storage.connect() as conn:  # Dagster's runs live in PostgreSQL
        stored = conn.execute(
            sa.text("SELECT status FROM runs WHERE run_id = :id"), {"id": run_id}
        ).scalar_one()
    storage.dispose()
    assert stored == "SUCCESS"
    with engine.connect() as conn:
        count = conn.execute(
            sa.text("SELECT count(*) FROM customers WHERE organization_id = :o"), {"o": org}
        ).scalar_one()
    assert count == 5
    assert time.monotonic() - started < TIMEOUT_S
