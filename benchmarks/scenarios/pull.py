"""Initial import of N QuickBooks customers end to end into Batchly (PostgreSQL): rows/s, API calls, peak memory, CPU.

The sandbox runs as its own process with Intuit's limits on and ``--latency-ms`` added to every answer, seeded with
``--customers`` customers spread over the last year. The pull is the pipeline's own: one window over the whole history,
its pages read concurrently within the realm's limits and streamed into the mirror, and reconciled into Batchly while
they arrive (``services.pull.overlap``, as ``batchly-sync pull`` and the Dagster step do; ``--sequential``: the mirror
then the reconciliation, as before). ``mirror_seconds`` is until the mirror's cursor moved and ``reconcile_seconds``
the reconciliation's tail after that (the two add up to ``seconds``); ``reconciled_during_mirror`` says how many rows
were in Batchly before the mirror ended and ``reconcile_span_seconds`` is the reconciliation's whole span.
``peak_rss_mb`` is this process's highest resident memory while it runs — it must not grow with the row count.
``quickbooks_seconds`` is the time spent waiting for query answers, summed over the concurrent readers.
``process_cpu_seconds``, ``sandbox_cpu_seconds`` and ``database_cpu_seconds`` are the CPU this process, the sandbox and
the database's backends spent meanwhile: on a machine of two cores their sum over two bounds the wall time.
``--sweep`` runs 10k, 30k, 100k and 300k customers one after the other (each in a fresh realm and database) and adds
``linearity``: rows_per_s at 300k over rows_per_s at 100k.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import sqlalchemy as sa

from batchly_pipelines.quickbooks.client import QueryPage, QuickBooksClient
from batchly_pipelines.services.pull.mirror import Window
from batchly_pipelines.services.pull.organization import EPOCH, pull_customers, reconcile_customers
from batchly_pipelines.services.pull.overlap import pull_and_reconcile_customers
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.schema import utcnow
from benchmarks.pull_setup import POSTGRES_URL, CpuSeconds, PeakMemory, connected_company

SWEEP = (10_000, 30_000, 100_000, 300_000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Scenario options."""
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument(
        "--sweep", action="store_true", help=f"run {', '.join(f'{n:,}' for n in SWEEP)} customers"
    )
    parser.add_argument("--latency-ms", type=float, default=150.0, help="added to every QuickBooks answer")
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="pull, then reconcile (as before the overlap) instead of reconciling while the pages arrive",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BATCHLY_BENCH_POSTGRES_URL", POSTGRES_URL),
        help="PostgreSQL server for a fresh Batchly database ('sqlite' for a temporary file)",
    )


def _time_queries(client: QuickBooksClient) -> list[float]:
    """Make ``client.query`` add the seconds it waits for QuickBooks to the returned one-item list."""
    spent = [0.0]
    query = client.query

    def timed(statement: str) -> QueryPage:
        started = time.monotonic()
        try:
            return query(statement)
        finally:
            spent[0] += time.monotonic() - started

    client.query = timed  # type: ignore[method-assign]
    return spent


def import_customers(
    customers: int, latency_ms: float, database_url: str, *, sequential: bool = False
) -> dict[str, Any]:
    """One initial import of ``customers`` customers, measured: overlapped (the pipeline's way), or with
    ``sequential`` the pull then the reconciliation (as before the overlap)."""
    seed = {"customers": customers, "items": 0, "invoices": 0, "payments": 0, "days": 365, "seed": 7}
    with connected_company(database_url, seed, latency_ms=latency_ms) as company:
        window = Window(EPOCH, utcnow())
        waiting = _time_queries(company.client)
        with PeakMemory() as memory, CpuSeconds(company.engine) as cpu_seconds:
            cpu_started, started = time.process_time(), time.monotonic()
            if sequential:
                pulled = pull_customers(company.engine, company.client, company.organization_id, window)
                mirror_seconds, mirror_cpu = time.monotonic() - started, time.process_time() - cpu_started
                reconciled = reconcile_customers(company.engine, company.organization_id)
                during = 0
            else:
                done = pull_and_reconcile_customers(
                    company.engine, company.client, company.organization_id, window
                )
                pulled, reconciled = done.pulled, done.reconciled
                mirror_seconds, mirror_cpu = done.mirror_seconds, None
                during = done.reconciled_during_mirror
            seconds = time.monotonic() - started
        with company.engine.connect() as conn:
            in_batchly = conn.execute(sa.select(sa.func.count()).select_from(s.customers)).scalar_one()
    result = {
        "customers": customers,
        "mode": "sequential" if sequential else "overlapped",
        "rows_per_s": round(customers / seconds, 1),
        "api_calls": pulled.api_calls,
        "peak_rss_mb": round(memory.peak_mb, 1),
        "baseline_rss_mb": round(memory.baseline_mb, 1),
        "seconds": round(seconds, 1),
        "mirror_seconds": round(mirror_seconds, 1),
        "reconcile_seconds": round(seconds - mirror_seconds, 1),
        "reconciled_during_mirror": during,
        "reconcile_span_seconds": round(reconciled.duration_s, 1),
        "quickbooks_seconds": round(waiting[0], 1),
        **cpu_seconds.numbers(),
        "created": reconciled.created,
        "in_batchly": in_batchly,
        "latency_ms": latency_ms,
        "database": database_url.split("@")[-1],
        "load_average": round(os.getloadavg()[0], 1),
    }
    if mirror_cpu is not None:
        result["mirror_cpu_seconds"] = round(mirror_cpu, 1)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure ``rows_per_s``, ``api_calls`` and ``peak_rss_mb`` of the initial import (of each size with
    ``--sweep``)."""
    if not args.sweep:
        return import_customers(
            args.customers, args.latency_ms, args.database_url, sequential=args.sequential
        )
    runs = []
    for customers in SWEEP:
        runs.append(
            import_customers(customers, args.latency_ms, args.database_url, sequential=args.sequential)
        )
        print(runs[-1], flush=True)
    by_size = {r["customers"]: r for r in runs}
    return {
        "sweep": runs,
        "linearity": round(by_size[300_000]["rows_per_s"] / by_size[100_000]["rows_per_s"], 3),
    }
