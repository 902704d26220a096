"""Initial import of N QuickBooks customers end to end into Batchly (PostgreSQL): rows/s, API calls, peak memory.

The sandbox runs as its own process with Intuit's limits on and ``--latency-ms`` added to every answer, seeded with
``--customers`` customers spread over the last year. The pull is the pipeline's own (``services.pull``): one window
over the whole history streamed page by page into the mirror, then reconciled into Batchly (every customer created).
``peak_rss_mb`` is this process's highest resident memory while it runs — it must not grow with the row count.
``quickbooks_seconds`` is the time spent waiting for query answers (the next page is fetched while one is stored).
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Scenario options."""
    parser.add_argument("--customers", type=int, default=100_000)
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure ``rows_per_s``, ``api_calls`` and ``peak_rss_mb`` of the initial import."""
    seed = {"customers": args.customers, "items": 0, "invoices": 0, "payments": 0, "days": 365, "seed": 7}
    with connected_company(args.database_url, seed, latency_ms=args.latency_ms) as company:
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
        "customers": args.customers,
        "rows_per_s": round(args.customers / seconds, 1),
        "api_calls": pulled.api_calls,
        "peak_rss_mb": round(memory.peak_mb, 1),
        "baseline_rss_mb": round(memory.baseline_mb, 1),
        "seconds": round(seconds, 1),
        "pull_seconds": round(mirrored - started, 1),
        "reconcile_seconds": round(seconds - (mirrored - started), 1),
        "quickbooks_seconds": round(waiting[0], 1),
        "created": reconciled.created,
        "in_batchly": in_batchly,
        "latency_ms": args.latency_ms,
        "database": args.database_url.split("@")[-1],
    }
