"""The same initial import through the three ways an operator starts one: the services (as ``pull`` measures it),
``batchly-sync pull --org N`` (a process of its own) and a Dagster run of ``pull_customers`` over the whole history
(what a backfill of every day of the company partition runs: one window, ``BackfillPolicy.single_run``). All three
reconcile the customers while their pages arrive (``services.pull.overlap``).

Each path imports ``--customers`` customers from a fresh realm (150 ms latency per answer, Intuit's limits) into a
fresh PostgreSQL database; ``rows_per_s`` is customers over the path's wall time (the CLI's includes starting
Python and pulling the — empty — items and payments). For Dagster it is the pull step's time (from the run's first
step start to the step's success); ``paths.dagster.seconds`` is the whole run, its asset checks included.
``spread`` is the slowest path's rows/s over the fastest's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from batchly_pipelines.store import schema as s
from benchmarks.pull_setup import POSTGRES_URL, connected_company
from benchmarks.scenarios.pull import import_customers

CLI = Path(sys.executable).with_name("batchly-sync")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Scenario options."""
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=float, default=150.0, help="added to every QuickBooks answer")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BATCHLY_BENCH_POSTGRES_URL", POSTGRES_URL),
        help="PostgreSQL server for a fresh Batchly database ('sqlite' for a temporary file)",
    )


def _seed(customers: int) -> dict[str, int]:
    return {"customers": customers, "items": 0, "invoices": 0, "payments": 0, "days": 365, "seed": 7}


def _in_batchly(engine: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(s.customers)).scalar_one())


def _cli(args: argparse.Namespace) -> dict[str, Any]:
    with connected_company(args.database_url, _seed(args.customers), latency_ms=args.latency_ms) as company:
        env = {**os.environ, **company.env}
        started = time.monotonic()
        done = subprocess.run(
            [str(CLI), "pull", "--org", str(company.organization_id)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.monotonic() - started
        if done.returncode != 0:
            raise RuntimeError(f"batchly-sync pull failed: {done.stderr[-2000:]}")
        return {"seconds": round(seconds, 1), "in_batchly": _in_batchly(company.engine)}


def _dagster(args: argparse.Namespace) -> dict[str, Any]:
    from dagster import instance_for_test

    from batchly_pipelines.definitions import defs
    from batchly_pipelines.defs.partitions import COMPANY, company_key, day_tags
    from batchly_pipelines.defs.resources import BatchlyDatabase, QuickBooksResource

    with connected_company(args.database_url, _seed(args.customers), latency_ms=args.latency_ms) as company:
        saved = {name: os.environ.get(name) for name in company.env}
        os.environ.update(company.env)
        try:
            url = company.env["BATCHLY_DATABASE_URL"]
            resources = {
                "batchly_db": BatchlyDatabase(database_url=url),
                "quickbooks": QuickBooksResource(database_url=url),
            }
            key = company_key(company.organization_id, "Bench Co")
            today = datetime.now(UTC).date()
            with instance_for_test() as instance:
                instance.add_dynamic_partitions(COMPANY, [key])
                started = time.monotonic()
                result = defs.resolve_job_def("pull_customers").execute_in_process(
                    instance=instance,
                    resources=resources,
                    partition_key=key,
                    tags=day_tags(date(today.year - 2, 1, 1), today),
                    raise_on_error=False,
                )
                seconds = time.monotonic() - started
                if not result.success:
                    raise RuntimeError([e.message for e in result.all_events if e.is_failure])
                entries = [e for e in instance.all_logs(result.run_id) if e.dagster_event is not None]
            begun = min(e.timestamp for e in entries if e.dagster_event.event_type_value == "STEP_START")
            step = max(
                e.timestamp
                for e in entries
                if e.dagster_event.event_type_value == "STEP_SUCCESS" and e.step_key == "pull_customers_step"
            )
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        return {
            "seconds": round(seconds, 1),
            "step_seconds": round(step - begun, 1),
            "in_batchly": _in_batchly(company.engine),
        }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure ``rows_per_s`` of the initial import through each path."""
    paths: dict[str, dict[str, Any]] = {}
    service = import_customers(args.customers, args.latency_ms, args.database_url)
    paths["service"] = {"seconds": service["seconds"], "in_batchly": service["in_batchly"]}
    paths["cli"] = _cli(args)
    paths["dagster"] = _dagster(args)
    for numbers in paths.values():
        numbers["rows_per_s"] = round(args.customers / numbers.get("step_seconds", numbers["seconds"]), 1)
        print(numbers, flush=True)
    speeds = [numbers["rows_per_s"] for numbers in paths.values()]
    return {
        "customers": args.customers,
        **{f"{name}_rows_per_s": numbers["rows_per_s"] for name, numbers in paths.items()},
        "paths": paths,
        "spread": round(min(speeds) / max(speeds), 3),
        "load_average": round(os.getloadavg()[0], 1),
    }
