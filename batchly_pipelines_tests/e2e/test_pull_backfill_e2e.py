"""End to end with Dagster really running: the company sensor adds the organisation's partition by itself, and a
backfill of a range of days over the multi-partitioned pull assets runs as one run (``BackfillPolicy.single_run``,
company x day — the combination the Dagster notes warn about) and ends with every QuickBooks customer in Batchly."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from batchly_pipelines.defs.partitions import pull_key
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
TIMEOUT_S = 150.0

LAUNCH = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } ... on InvalidSubsetError { message }
} }"""
BACKFILL = """query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }"""
COMPANIES = """{ assetNodeOrError(assetKey: {path: ["qbo_customers"]}) {
  ... on AssetNode { partitionKeysByDimension { name partitionKeys } } } }"""


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
    with DagsterStack(tmp_path / "dagster_home", env) as dagster:

        def company_partition() -> bool:  # added by company_partitions_sensor, RUNNING by default
            node = dagster.graphql(COMPANIES)["assetNodeOrError"]
            keys = {d["name"]: d["partitionKeys"] for d in node["partitionKeysByDimension"]}
            return str(org) in keys["company"]

        _until(company_partition, "the company sensor to add the partition")
        today = utcnow().date()
        keys = [str(pull_key(org, (today - timedelta(days=n)).isoformat())) for n in range(DAYS)]
        params = {
            "partitionNames": keys,
            "assetSelection": [{"path": ["qbo_customers"]}, {"path": ["batchly_customers"]}],
        }
        launched = dagster.graphql(LAUNCH, {"params": params})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]

        def finished() -> str | None:
            status = dagster.graphql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]["status"]
            return (
                status if status in ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED") else None
            )

        status = _until(finished, "the backfill")
        runs = [r for r in dagster.runs() if {"key": "dagster/backfill", "value": backfill_id} in r["tags"]]

    assert status in ("COMPLETED", "COMPLETED_SUCCESS"), status
    assert runs and all(run["status"] == "SUCCESS" for run in runs)
    assert len(runs) == 1  # one run, one window for the whole range, not one per day
    with engine.connect() as conn:
        customers = conn.execute(sa.select(sa.func.count()).select_from(s.customers)).scalar_one()
    assert customers == SEED["customers"]
