"""A backfill of a range of days pulls the whole range (issue 10, failure 11), launched the way Dagster launches it:
the GraphQL mutation the UI sends — from the job page (a partition-set backfill) or from the asset catalog (an asset
selection) — then the backfill daemon's iteration, which creates the run, and a run launcher that executes it.

Company partitions are chosen in the dialog, the days are the backfill's tags ``batchly/pull/from`` / ``to`` (the
dialog's "tags" field). A backfill of several companies runs as one run over all of them
(``BackfillPolicy.single_run``), whose range tags give its companies."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import AssetKey, DagsterInstance, instance_for_test
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.storage.dagster_run import RunsFilter
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.backfill import execute_backfill_iteration
from dagster_graphql.test.utils import execute_dagster_graphql

from batchly_pipelines.defs.partitions import COMPANY, FROM_TAG, TO_TAG, company_key
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.support.pull import Company

LOCATION = "batchly_test_location"
DAYS = 32  # the seeded customers were all changed 24 to 30 days ago: none on the range's first day
LAUNCH = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } ... on InvalidSubsetError { message }
} }"""


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    launcher = {
        "module": "dagster._core.launcher.sync_in_memory_run_launcher",
        "class": "SyncInMemoryRunLauncher",
    }
    coordinator = {
        "module": "dagster._core.run_coordinator",
        "class": "DefaultRunCoordinator",
    }  # launch at once
    with instance_for_test(
        overrides={"run_launcher": launcher, "run_coordinator": coordinator}
    ) as dagster_instance:
        yield dagster_instance


@pytest.fixture
def workspace(instance: DagsterInstance) -> Iterator[WorkspaceProcessContext]:
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(
            module_name="batchly_pipelines_tests.support.pull_location",
            attribute="defs",
            working_directory=str(Path(__file__).resolve().parents[2]),
        ),
        location_name=LOCATION,
    )
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as context:
        yield context


def _day_tags() -> list[dict[str, str]]:
    """The range of days as the tags the backfill dialog sends."""
    today = utcnow().astimezone(UTC).date()
    first = today - timedelta(days=DAYS - 1)
    return [{"key": FROM_TAG, "value": first.isoformat()}, {"key": TO_TAG, "value": today.isoformat()}]


def _launch(workspace: WorkspaceProcessContext, params: dict[str, Any]) -> str:
    result = execute_dagster_graphql(workspace.create_request_context(), LAUNCH, {"params": params})
    assert result.errors is None, result.errors
    launched = result.data["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return str(launched["backfillId"])


@pytest.mark.parametrize("launched_from", ["job page", "asset catalog"])
def test_a_range_backfill_pulls_the_whole_range_in_one_run(
    connected: Company, instance: DagsterInstance, workspace: WorkspaceProcessContext, launched_from: str
) -> None:
    connected.qbo.admin.seed(connected.qbo.realm_id, customers=12, items=0, invoices=0, payments=0, days=30)
    assert os.environ[
        "BATCHLY_DATABASE_URL"
    ]  # set by the connected fixture, read by the location's resources
    # a second company of the same database, unconnected to any realm it would not be asked for
    key = company_key(connected.org, "Acme Ltd")
    instance.add_dynamic_partitions(COMPANY, ["another-company-9999", key])
    params: dict[str, Any] = {"partitionNames": [key], "tags": _day_tags()}
    if launched_from == "job page":  # the pull jobs run their steps in the run's process already
        repository = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}
        params["selector"] = {
            "partitionSetName": "pull_customers_partition_set",
            "repositorySelector": repository,
        }
    else:
        params["assetSelection"] = [{"path": ["qbo_customers"]}, {"path": ["batchly_customers"]}]
        # the steps in this process rather than one process each (what the launchpad's run config allows)
        params["runConfigData"] = {"execution": {"config": {"in_process": {}}}}
    backfill_id = _launch(workspace, params)

    for _ in range(
        3
    ):  # the daemon's ticks: submit the run (executed synchronously), then settle the backfill
        list(execute_backfill_iteration(workspace, logging.getLogger("backfill-daemon")))
    runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))
    assert [run.status.value for run in runs] == ["SUCCESS"]  # one run for the whole range
    tags = runs[0].tags
    assert {tag["key"]: tag["value"] for tag in _day_tags()}.items() <= tags.items()
    with connected.engine.connect() as conn:
        customers = conn.execute(sa.select(sa.func.count()).select_from(s.customers)).scalar_one()
    assert customers == 12  # every day of the range was pulled, not only the first
    for asset in ("qbo_customers", "batchly_customers"):  # and the catalog shows the company materialised
        assert instance.get_materialized_partitions(AssetKey(asset)) == {key}, asset
