"""Full reconciliation of one company (issue 10's safety net): seconds and API calls for ``--customers`` customers.

The sandbox runs as its own process with Intuit's limits on and ``--latency-ms`` added to every answer, seeded with
``--customers`` customers and ``--items`` items; the organisation first imports them with the pipeline's own pull, so
both sides agree. Then ``services.reconciliation.reconcile_company`` runs as the ``reconcile_company`` job runs it
(with repairs): a ``COUNT(*)`` per entity, every record read in pages of 1,000, compared field by field with Batchly,
the mirror refreshed and the pull's reconciliations run. ``--edits`` customers are then changed in QuickBooks without a
pull, so the measured run also repairs something. Targets for 10,000 customers: ≤ 60 s, ≤ 30 API calls.
"""

from __future__ import annotations

import argparse
import os
import random
from typing import Any

from batchly_pipelines.services.pull.mirror import Window
from batchly_pipelines.services.pull.organization import (
    EPOCH,
    pull_customers,
    pull_items,
    reconcile_customers,
    reconcile_items,
)
from batchly_pipelines.services.reconciliation.company import reconcile_company
from batchly_pipelines.store.schema import utcnow
from benchmarks.pull_setup import POSTGRES_URL, connected_company


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Scenario options."""
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument(
        "--edits", type=int, default=50, help="customers changed in QuickBooks and not pulled"
    )
    parser.add_argument("--latency-ms", type=float, default=150.0, help="added to every QuickBooks answer")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BATCHLY_BENCH_POSTGRES_URL", POSTGRES_URL),
        help="PostgreSQL server for a fresh Batchly database ('sqlite' for a temporary file)",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure ``seconds`` and ``api_calls`` of one full reconciliation (targets ≤ 60 and ≤ 30)."""
    seed = {
        "customers": args.customers,
        "items": args.items,
        "invoices": 0,
        "payments": 0,
        "days": 365,
        "seed": 7,
    }
    with connected_company(args.database_url, seed, latency_ms=args.latency_ms) as company:
        window = Window(EPOCH, utcnow())
        pull_customers(company.engine, company.client, company.organization_id, window)
        pull_items(company.engine, company.client, company.organization_id, window)
        reconcile_customers(company.engine, company.organization_id)
        reconcile_items(company.engine, company.organization_id)
        rng = random.Random(10)
        for customer_id in rng.sample(
            company.seeded["Customer"], min(args.edits, len(company.seeded["Customer"]))
        ):
            company.admin.action(
                company.realm_id,
                "update_customer",
                customer_id=customer_id,
                fields={"Notes": f"edited {customer_id}"},
            )
        heard: list[str] = []
        result = reconcile_company(company.engine, company.client, company.organization_id, log=heard.append)
        after = reconcile_company(company.engine, company.client, company.organization_id, repair=False)
    summary = result.summary()
    return {
        "customers": args.customers,
        "items": args.items,
        "seconds": round(result.seconds, 1),
        "api_calls": result.api_calls,
        "expected_calls": result.expected_calls,
        "records": summary["records"],
        "differences_found": len(result.repaired) + summary["differences"],
        "repaired": summary["repaired"],
        "open": summary["open"],
        "differences_after": len(after.differences),
        "compare_only_seconds": round(after.seconds, 1),
        "compare_only_api_calls": after.api_calls,
        "logged": heard[0] if heard else "",
        "latency_ms": args.latency_ms,
        "database": args.database_url.split("@")[-1],
    }
