"""The main job behind ``make run`` / ``batchly-sync run``: one whole cycle on the configured setup."""

from __future__ import annotations

import time

import sqlalchemy as sa

from batchly_pipelines.cli_output import section
from batchly_pipelines.local_sandbox import local_sandbox
from batchly_pipelines.settings import Settings
from batchly_pipelines.store import migrate
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.db import create_engine
from batchly_pipelines.store.demo import create_demo
from batchly_pipelines.store.queue import SyncQueue


def run_main_job(settings: Settings, *, seed: int = 42) -> int:
    """Migrate, create demo data on an empty database, and report what is waiting to sync."""
    started = time.monotonic()
    engine = create_engine(settings.database_url)
    before = migrate.current_revision(engine)
    migrate.upgrade(engine)
    section(
        "database",
        f"{engine.url.render_as_string()} migrated {before or '(empty)'} → {migrate.current_revision(engine)}",
    )

    with engine.connect() as conn:
        organisations = conn.execute(sa.select(sa.func.count()).select_from(s.organizations)).scalar_one()
    if organisations == 0:
        demo = create_demo(engine, customers=50, items=20, invoices=100, seed=seed)
        section(
            "demo data",
            f"created organisation {demo.organization_id}: {demo.customers} customers, {demo.items} items, "
            f"{demo.sales_orders} sales orders, {demo.invoices} invoices ({demo.invoice_lines} lines)",
        )
    else:
        section("demo data", f"kept the {organisations} existing organisation(s)")

    if settings.is_local:
        with local_sandbox(settings) as sandbox:
            how = "started" if sandbox.started_here else "already running"
            section("quickbooks", f"local sandbox {how} at {sandbox.base_url}")
    else:
        section("quickbooks", f"Intuit {settings.qbo_environment} at {settings.qbo_base_url}")

    depth = SyncQueue(engine).depth()
    pending = sum(d["pending"] for d in depth.values())
    section(
        "sync queue",
        f"{pending} record(s) waiting to be pushed to QuickBooks across {len(depth)} organisation(s)",
    )
    section(
        "not yet built",
        "pulling from and pushing to QuickBooks (issues 5 and 6): nothing was sent to or read from QuickBooks",
    )
    section("time", f"{time.monotonic() - started:.1f}s")
    return 0
