"""End to end with Dagster really running: the company sensor adds the organisation's partition (named after it) by
itself, and a backfill of a range of days — the company partition with the ``batchly/pull/from`` / ``to`` tags — runs
as one run and pulls the whole range, launched each way an operator launches it: from the asset catalog and from the
job page (the GraphQL mutations the UI sends) and from the command line (``dagster job backfill``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from batchly_pipelines.defs.partitions import FROM_TAG, TO_TAG, company_key
from batchly_pipelines.quickbooks.oauth import TokenSet
from batchly_pipelines.store import migrate
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.connections import ConnectionStore
from batchly_pipelines.store.db import create_engine
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.support import factories
from batchly_pipelines_tests.support.dagster_stack import DagsterStack
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxConfig, SandboxServer

SEED = {"customers": 40, "items": 5, "invoices": 10, "payments": 5, "days": 6, "seed": 9}
DAYS = 8
TIMEOUT_S = 400.0  # generous: the shared 2-core machine runs at loads of 20 and more

LAUNCH = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } ... on InvalidSubsetError { message }
} }"""
BACKFILL = """query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }"""
COMPANIES = (
    """{ assetNodeOrError(assetKey: {path: ["qbo_customers"]}) { ... on AssetNode { partitionKeys } } }"""
)
BACKFILLS = """{ partitionBackfillsOrError { ... on PartitionBackfills { results { id } } } }"""
PULLED = """query($id: ID!) { runOrError(runId: $id) { ... on Run { assetMaterializations { assetKey { path } partition
  metadataEntries { label ... on IntMetadataEntry { intValue } } } } } }"""
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig(port=0, throttle=False)) as server:
        yield server


def _until(check: Any, what: str) -> Any:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_a_range_backfill_is_one_run_and_fills_batchly(sandbox: SandboxServer, tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'batchly.sqlite'}"
    secret_key = Fernet.generate_key().decode()
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    admin = SandboxAdmin(sandbox.base_url)
    realm_id = admin.new_realm()
    admin.seed(realm_id, **SEED)
    with engine.begin() as conn:
        org = factories.organization(conn)
    tokens = TokenSet.from_response(admin.tokens(realm_id))
    ConnectionStore(engine, secret_key).save(org, realm_id, "local", sandbox.base_url, tokens)
    env = {
        "BATCHLY_DATABASE_URL": database_url,
        "BATCHLY_SECRET_KEY": secret_key,
        "QBO_ENVIRONMENT": "local",
        "QBO_BASE_URL": sandbox.base_url,
    }
    home = tmp_path / "dagster_home"
    key = company_key(org, "Acme Ltd")
    today = utcnow().date()
    days = {FROM_TAG: (today - timedelta(days=DAYS - 1)).isoformat(), TO_TAG: today.isoformat()}
    tags = [{"key": k, "value": v} for k, v in days.items()]
    with DagsterStack(home, env) as dagster:
        _until(
            lambda: key in dagster.graphql(COMPANIES)["assetNodeOrError"]["partitionKeys"],
            "the company sensor to add the partition",
        )
        launched = {
            "asset catalog": _launch(
                dagster,
                {
                    "partitionNames": [key],
                    "assetSelection": [{"path": ["qbo_customers"]}, {"path": ["batchly_customers"]}],
                    "tags": tags,
                },
            ),
            "job page": _launch(
                dagster,
                {
                    "partitionNames": [key],
                    "selector": {
                        "partitionSetName": "pull_customers_partition_set",
                        "repositorySelector": {
                            "repositoryLocationName": "batchly_pipelines",
                            "repositoryName": "__repository__",
                        },
                    },
                    "tags": tags,
                },
            ),
        }
        before = {b["id"] for b in dagster.graphql(BACKFILLS)["partitionBackfillsOrError"]["results"]}
        command = [
            str(Path(sys.executable).with_name("dagster")), "job", "backfill", "-j", "pull_customers",
            "-w", "workspace.yaml", "--partitions", key, "--tags", json.dumps(days), "--noprompt",
        ]  # fmt: skip
        subprocess.run(command, cwd=REPO, env=dagster.env, check=True, capture_output=True, timeout=TIMEOUT_S)
        [launched["command line"]] = {
            b["id"] for b in dagster.graphql(BACKFILLS)["partitionBackfillsOrError"]["results"]
        } - before

        outcomes = {}
        for way, backfill_id in launched.items():

            def finished(backfill_id: str = backfill_id) -> str | None:
                status = dagster.graphql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]["status"]
                return (
                    status
                    if status in ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED")
                    else None
                )

            status = _until(finished, f"the backfill from the {way}")
            runs = [
                r for r in dagster.runs() if {"key": "dagster/backfill", "value": backfill_id} in r["tags"]
            ]
            pulled = [
                entry["intValue"]
                for run in runs
                for event in dagster.graphql(PULLED, {"id": run["runId"]})["runOrError"][
                    "assetMaterializations"
                ]
                if event["assetKey"]["path"] == ["qbo_customers"] and event["partition"] == key
                for entry in event["metadataEntries"]
                if entry["label"] == "pulled"
            ]
            outcomes[way] = (status, [run["status"] for run in runs], runs and runs[0]["tags"], pulled)

    for way, (status, statuses, run_tags, pulled) in outcomes.items():
        assert status in ("COMPLETED", "COMPLETED_SUCCESS"), (way, status)
        assert statuses == ["SUCCESS"], way  # one run, one window for the whole range, not one per day
        assert {"key": FROM_TAG, "value": days[FROM_TAG]} in run_tags, way
        assert pulled == [SEED["customers"]], way  # every seeded customer changed inside the range: all read
    with engine.connect() as conn:
        customers = conn.execute(sa.select(sa.func.count()).select_from(s.customers)).scalar_one()
    assert customers == SEED["customers"]


def _launch(dagster: DagsterStack, params: dict[str, Any]) -> str:
    launched = dagster.graphql(LAUNCH, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return str(launched["backfillId"])
