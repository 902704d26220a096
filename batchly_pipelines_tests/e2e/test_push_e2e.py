"""End to end with Dagster really running: an invoice inserted into Batchly reaches QuickBooks within a minute.

``dagster dev`` runs the real definitions; nothing is launched by hand. The sensor (RUNNING by default) notices the
queued invoices, its run pushes them to a throttled sandbox over HTTP. Twenty invoices are inserted two seconds apart
and the time from each insert until the sandbox holds it is measured; p50/p95 are printed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from batchly_pipelines.quickbooks.oauth import TokenSet
from batchly_pipelines.store import migrate
from batchly_pipelines.store.connections import ConnectionStore
from batchly_pipelines.store.db import create_engine
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.dagster_stack import DagsterStack
from batchly_pipelines_tests.support.push import Books
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxConfig, SandboxServer

INVOICES = 20
SPACING_S = 2.0
DEADLINE_S = 60.0


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """A sandbox with Intuit's limits on, at real speed."""
    with SandboxServer(SandboxConfig(port=0)) as server:
        yield server


def test_inserted_invoices_reach_quickbooks_within_a_minute(sandbox: SandboxServer, tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'batchly.sqlite'}"
    secret_key = Fernet.generate_key().decode()
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    admin = SandboxAdmin(sandbox.base_url)
    realm_id = admin.new_realm()
    with engine.begin() as conn:
        org = f.organization(conn)
        customer = f.customer(conn, org)
        item = f.item(conn, org)
    tokens = TokenSet.from_response(admin.tokens(realm_id))
    ConnectionStore(engine, secret_key).save(org, realm_id, "local", sandbox.base_url, tokens)
    books = Books(sandbox, realm_id)
    env = {
        "BATCHLY_DATABASE_URL": database_url,
        "BATCHLY_SECRET_KEY": secret_key,
        "QBO_ENVIRONMENT": "local",
        "QBO_BASE_URL": sandbox.base_url,
    }

    with DagsterStack(tmp_path / "dagster_home", env) as dagster:
        inserted: dict[str, float] = {}
        arrived: dict[str, float] = {}
        for n in range(INVOICES):
            doc_number = f"E2E-{n:03d}"
            with engine.begin() as conn:
                f.invoice(conn, org, customer, item, doc_number=doc_number)
            inserted[doc_number] = time.monotonic()
            _watch(books, inserted, arrived, until=time.monotonic() + SPACING_S)
        _watch(books, inserted, arrived, until=time.monotonic() + DEADLINE_S)
        runs = dagster.settled_runs()

    latencies = sorted(arrived[d] - inserted[d] for d in arrived)
    p50 = statistics.median(latencies) if latencies else float("nan")
    p95 = latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan")
    print(f"\npush latency over {len(latencies)} invoices: p50 {p50:.1f}s, p95 {p95:.1f}s, runs {len(runs)}")
    assert sorted(arrived) == sorted(inserted), f"never arrived: {sorted(set(inserted) - set(arrived))}"
    assert max(latencies) < DEADLINE_S
    assert all(len(copies) == 1 for copies in books.by_doc_number().values())
    # the realm's first CDC repair sweep runs beside the pushes
    sweep = {"key": "dagster/sensor_name", "value": "webhook_inbox_sensor"}
    pushes = [run for run in runs if sweep not in run["tags"]]
    assert pushes and all(
        {"key": "batchly/realm", "value": realm_id} in run["tags"] and run["status"] == "SUCCESS"
        for run in pushes
    )


def _watch(books: Books, inserted: dict[str, float], arrived: dict[str, float], until: float) -> None:
    """Note when each inserted invoice first shows up in QuickBooks, until ``until`` or all have."""
    while time.monotonic() < until and len(arrived) < len(inserted):
        now = time.monotonic()
        for doc_number in books.by_doc_number():
            if doc_number in inserted:
                arrived.setdefault(doc_number, now)
        time.sleep(0.1)
    if len(arrived) < len(inserted):
        time.sleep(max(0.0, until - time.monotonic()))
