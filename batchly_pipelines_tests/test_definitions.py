"""The real Dagster definitions load, validate and run against a real database."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from dagster import Definitions, materialize
from sqlalchemy.engine import Engine

from batchly_pipelines.definitions import defs
from batchly_pipelines.defs.monitoring.assets import sync_status
from batchly_pipelines.defs.monitoring.checks import dead_letter_empty
from batchly_pipelines.defs.resources import BatchlyDatabase
from batchly_pipelines.store.demo import create_demo
from batchly_pipelines.store.queue import SyncQueue


def test_definitions_load_and_validate() -> None:
    Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("sync_status_job").name == "sync_status_job"


def test_sync_status_reports_queue_depth_and_flags_the_dead_letter(engine: Engine) -> None:
    create_demo(engine, customers=3, items=2, invoices=4)
    queue = SyncQueue(engine)
    [item] = queue.claim("test", limit=1, lease=timedelta(minutes=1))
    queue.fail(item, "customers[1].display_name: contains ':'", retryable=False)
    database = BatchlyDatabase(database_url=engine.url.render_as_string(hide_password=False))
    result = materialize([sync_status, dead_letter_empty], resources={"batchly_db": database})
    assert result.success
    [materialization] = result.asset_materializations_for_node("sync_status")
    metadata = materialization.metadata
    assert metadata["dagster/row_count"].value == 1
    assert metadata["queue_pending"].value == 3 + 2 + 4 - 1 and metadata["queue_dead"].value == 1
    [row] = [
        record.data for record in metadata["status"].value.records
    ]  # a table the UI renders, not markdown
    assert row["name"] == "Batchly Demo Company" and row["dead"] == 1 and row["quickbooks"] == "not connected"
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and check.metadata["dead"].value == 1


def test_dagster_cli_validates_the_workspace(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=root,
        env={
            **os.environ,
            "DAGSTER_HOME": str(tmp_path),
        },  # `make test` exports a home that may not exist yet
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr
