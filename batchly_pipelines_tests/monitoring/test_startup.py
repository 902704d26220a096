"""What ``make dev`` records before the UI starts: the company partitions, a pull run of each pull job per company
and ``sync_status`` with its checks — so the UI opens on the truth, not on "Missing" and "Never materialized"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter

from batchly_pipelines.quickbooks.oauth import TokenSet
from batchly_pipelines.store import migrate
from batchly_pipelines.store.connections import ConnectionStore
from batchly_pipelines.store.db import create_engine
from batchly_pipelines_tests.support import factories as f
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxConfig, SandboxServer

REPO = Path(__file__).resolve().parents[2]


def test_the_setup_is_recorded_as_dagster_runs_before_the_ui_starts(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'batchly.sqlite'}"
    secret_key = Fernet.generate_key().decode()
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    with SandboxServer(SandboxConfig(port=0, throttle=False)) as sandbox:
        admin = SandboxAdmin(sandbox.base_url)
        realm_id = admin.new_realm()
        admin.seed(realm_id, customers=3, items=2)
        with engine.begin() as conn:
            org = f.organization(conn, "Acme Ltd")
        ConnectionStore(engine, secret_key).save(
            org, realm_id, "local", sandbox.base_url, TokenSet.from_response(admin.tokens(realm_id))
        )
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "BATCHLY_DATABASE_URL": database_url,
            "BATCHLY_SECRET_KEY": secret_key,
            "QBO_ENVIRONMENT": "local",
            "QBO_BASE_URL": sandbox.base_url,
        }
        done = subprocess.run(
            [sys.executable, "-m", "batchly_pipelines.defs.monitoring.startup"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    instance = DagsterInstance.from_config(str(home))
    runs = instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
    assert {"pull_customers", "pull_items", "pull_payments", "sync_status_job"} <= {
        r.dagster_run.job_name for r in runs
    }
    [company] = instance.get_dynamic_partitions("company")
    for asset in ("batchly_customers", "batchly_items", "batchly_invoice_payments", "sync_status"):
        assert instance.get_latest_materialization_event(AssetKey(asset)) is not None, asset
    materialized = instance.get_materialized_partitions(AssetKey("batchly_customers"))
    assert company in materialized
    customers = instance.get_latest_materialization_event(AssetKey("batchly_customers"))
    assert customers is not None and customers.asset_materialization is not None
    assert customers.asset_materialization.metadata["created"].value == 3
    assert "pulled" in done.stdout


@pytest.fixture(autouse=True)
def _no_dagster_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
