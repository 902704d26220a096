"""Bulk push through the real Dagster job: N invoices queued at once, QuickBooks' limits time-compressed, optional kills.

A demo organisation (customers, items, ``--invoices`` invoices, all queued in one transaction) is connected to a fresh
realm of an in-process sandbox with Intuit's limits on, compressed by ``--time-scale``. ``dagster dev`` runs the
project's definitions: ``sync_queue_sensor`` launches ``push_to_quickbooks`` on its own. With ``--kill K`` the run's
processes are SIGKILLed K times mid-way; each killed run is marked dead in Dagster (what an operator does: the default
run launcher cannot notice a vanished process) and the sensor carries on once the dead run's leases expire.

``throughput_ratio`` is the entity writes per QuickBooks minute while pushing (first to last write recorded in the
sync log, kills included) over the 1,200/minute ceiling (40 batch calls of 30).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.oauth import TokenSet
from batchly_pipelines.store import migrate
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.connections import ConnectionStore
from batchly_pipelines.store.db import create_engine
from batchly_pipelines.store.demo import create_demo
from batchly_pipelines_tests.support.dagster_stack import DagsterStack
from batchly_pipelines_tests.support.databases import fresh_database_url
from batchly_pipelines_tests.support.push import Books
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxConfig, SandboxServer

CEILING_PER_MINUTE = 40 * 30
POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Scenario options."""
    parser.add_argument("--invoices", type=int, default=5000)
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--kill", type=int, default=0, help="SIGKILL the run's processes this many times")
    parser.add_argument("--time-scale", type=float, default=5.0, help="QuickBooks minutes last 60/F seconds")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BATCHLY_BENCH_POSTGRES_URL", POSTGRES_URL),
        help="PostgreSQL server for a fresh Batchly database ('sqlite' for a file)",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the scenario and return its figures."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # stop Dagster on the way out
    with (
        tempfile.TemporaryDirectory(prefix="bench-push-") as folder,
        fresh_database_url(args.database_url, Path(folder)) as url,
    ):
        engine = create_engine(url)
        migrate.upgrade(engine)
        config = SandboxConfig(port=0, time_scale=args.time_scale, throttle=True)
        with SandboxServer(config) as sandbox:
            admin = SandboxAdmin(sandbox.base_url)
            realm_id = admin.new_realm()
            secret_key = Fernet.generate_key().decode()
            demo = create_demo(engine, customers=args.customers, items=args.items, invoices=args.invoices)
            with engine.begin() as conn:  # the demo retires a few customers; their invoices would be refused
                conn.execute(sa.update(s.customers).values(is_active=True))
            tokens = TokenSet.from_response(admin.tokens(realm_id))
            ConnectionStore(engine, secret_key).save(
                demo.organization_id, realm_id, "local", sandbox.base_url, tokens
            )
            env = {
                "BATCHLY_DATABASE_URL": url,
                "BATCHLY_SECRET_KEY": secret_key,
                "QBO_ENVIRONMENT": "local",
                "QBO_BASE_URL": sandbox.base_url,
                "QBO_TIME_SCALE": str(args.time_scale),
            }
            started = time.monotonic()
            with DagsterStack(Path(folder) / "dagster_home", env) as dagster:
                kills = _drive(dagster, engine, args)
                elapsed = time.monotonic() - started
                runs = dagster.settled_runs()
            books = Books(sandbox, realm_id)
            found = books.by_doc_number()
            counters = admin.counters()["realms"].get(realm_id, {})
        figures = _figures(engine, args, found, counters, kills, runs, elapsed)
        engine.dispose()
    return figures


def _drive(dagster: DagsterStack, engine: Engine, args: argparse.Namespace) -> int:
    """Wait until every invoice is mapped, killing the active run at evenly spaced points on the way."""
    kill_at = [args.invoices * (k + 1) // (args.kill + 1) for k in range(args.kill)]
    kills = 0
    deadline = time.monotonic() + args.timeout
    while (mapped := _mapped(engine)) < args.invoices:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {mapped} of {args.invoices} invoices mapped after {args.timeout:.0f}s")
        if kills < len(kill_at) and mapped >= kill_at[kills]:
            active = [run for run in dagster.runs() if run["status"] == "STARTED"]
            if active:
                for run in active:
                    dagster.signal_run(run["runId"], signal.SIGKILL)
                    dagster.mark_run_dead(run["runId"])
                print(f"killed run {active[0]['runId'][:8]} at {mapped} invoices mapped", flush=True)
                kills += 1
        time.sleep(0.2)
    return kills


def _mapped(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).where(s.invoices.c.qbo_id.is_not(None))).scalar_one()
        )


def _figures(
    engine: Engine,
    args: argparse.Namespace,
    found: dict[str, list[dict[str, Any]]],
    counters: dict[str, Any],
    kills: int,
    runs: list[dict[str, Any]],
    elapsed: float,
) -> dict[str, Any]:
    log = s.sync_log.c
    with engine.connect() as conn:
        first, last, writes = conn.execute(
            sa.select(sa.func.min(log.created_at), sa.func.max(log.created_at), sa.func.count()).where(
                log.direction == "push", log.outcome == "ok", log.action.in_(["create", "link", "update"])
            )
        ).one()
        unmapped = conn.execute(sa.select(sa.func.count()).where(s.invoices.c.qbo_id.is_(None))).scalar_one()
        dead = conn.execute(sa.select(sa.func.count()).where(s.sync_queue.c.status == "dead")).scalar_one()
    pushing = (last - first).total_seconds() if first and last else float("nan")
    per_minute = writes / (pushing * args.time_scale) * 60 if pushing else float("nan")
    invoices_in_qbo = sum(len(copies) for copies in found.values())
    return {
        "invoices": args.invoices,
        "time_scale": args.time_scale,
        "invoices_in_qbo": invoices_in_qbo,
        "duplicates": invoices_in_qbo - len(found),
        "unmapped": unmapped,
        "dead_letter": dead,
        "entity_writes": writes,
        "pushing_seconds": round(pushing, 2),
        "writes_per_qbo_minute": round(per_minute, 1),
        "throughput_ratio": round(per_minute / CEILING_PER_MINUTE, 3),
        "throttled": int(counters.get("throttled", 0)),
        "api_requests": counters.get("requests", {}),
        "kills": kills,
        "runs": len(runs),
        "runs_by_status": {
            status: sum(r["status"] == status for r in runs) for status in {r["status"] for r in runs}
        },
        "wall_seconds": round(elapsed, 1),
    }
