"""Initial import of N QuickBooks customers end to end into Batchly (PostgreSQL): rows/s, API calls, peak memory.

The sandbox runs as its own process with Intuit's limits on and ``--latency-ms`` added to every answer, seeded with
``--customers`` customers spread over the last year. The pull is the pipeline's own (``services.pull``): one window
over the whole history, its pages read concurrently within the realm's limits and streamed into the mirror, then
reconciled into Batchly in set-based batches (every customer created). ``mirror_seconds`` and ``reconcile_seconds``
split the end-to-end ``seconds``; ``peak_rss_mb`` is this process's highest resident memory while it runs — it must
not grow with the row count. ``quickbooks_seconds`` is the time spent waiting for query answers, summed over the
concurrent readers. ``--sweep`` runs 10k, 30k, 100k and 300k customers one after the other (each in a fresh realm
and database) and adds ``linearity``: rows_per_s at 300k over rows_per_s at 100k.
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
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.schema import utcnow
from benchmarks.pull_setup import POSTGRES_URL, PeakMemory, connected_company

SWEEP = (10_000, 30_000, 100_000, 300_000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Scenario options."""
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument(
        "--sweep", action="store_true", help=f"run {', '.join(f'{n:,}' for n in SWEEP)} customers"
    )
    parser.add_argument("--latency-ms", type=float, default=150.0, help="added to every QuickBooks answer")
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


def import_customers(customers: int, latency_ms: float, database_url: str) -> dict[str, Any]:
    """One initial import of ``customers`` customers, measured."""
    seed = {"customers": customers, "items": 0, "invoices": 0, "payments": 0, "days": 365, "seed": 7}
    with connected_company(database_url, seed, latency_ms=latency_ms) as company:
        window = Window(EPOCH, utcnow())
        waiting = _time_queries(company.client)
        with PeakMemory() as memory:
            started = time.monotonic()
            pulled = pull_customers(company.engine, company.client, company.organization_id, window)
            mirrored = time.monotonic()
            reconciled = reconcile_customers(company.engine, company.organization_id)
            seconds = time.monotonic() - started
        with company.engine.connect() as conn:
            in_batchly = conn.execute(sa.select(sa.func.count()).select_from(s.customers)).scalar_one()
    return {
        "customers": customers,
        "rows_per_s": round(customers / seconds, 1),
        "api_calls": pulled.api_calls,
        "peak_rss_mb": round(memory.peak_mb, 1),
        "baseline_rss_mb": round(memory.baseline_mb, 1),
        "seconds": round(seconds, 1),
        "mirror_seconds": round(mirrored - started, 1),
        "reconcile_seconds": round(seconds - (mirrored - started), 1),
        "quickbooks_seconds": round(waiting[0], 1),
        "created": reconciled.created,
        "in_batchly": in_batchly,
        "latency_ms": latency_ms,
        "database": database_url.split("@")[-1],
        "load_average": round(os.getloadavg()[0], 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure ``rows_per_s``, ``api_calls`` and ``peak_rss_mb`` of the initial import (of each size with
    ``--sweep``)."""
    if not args.sweep:
        return import_customers(args.customers, args.latency_ms, args.database_url)
    runs = []
    for customers in SWEEP:
        runs.append(import_customers(customers, args.latency_ms, args.database_url))
        print(runs[-1], flush=True)
    by_size = {r["customers"]: r for r in runs}
    return {
        "sweep": runs,
        "linearity": round(by_size[300_000]["rows_per_s"] / by_size[100_000]["rows_per_s"], 3),
    }
