"""QuickBooks calls of the nightly pulls: customers (10,000, of which 100 changed) and payments (5,000 open invoices,
200 of them paid), with the initial import done beforehand (not counted).

Each scenario seeds a realm in a sandbox process, imports everything once, then acts as the accountant (edits
customers, records payments) and runs the pipeline's pull over the window holding those changes — what the nightly
partition does — counting every call the client makes and timing the customers' pull and reconciliation. Targets:
``customer_calls`` ≤ 3 and ``customer_seconds`` ≤ 2, ``payment_calls`` ≤ 10.
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta
from typing import Any

from batchly_pipelines.services.pull.mirror import Window
from batchly_pipelines.services.pull.organization import (
    EPOCH,
    pull_customers,
    pull_organization,
    pull_payments,
    reconcile_customers,
    reconcile_invoice_payments,
)
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.support.pull import link_invoices_as_pushed
from benchmarks.pull_setup import Connected, connected_company


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Scenario options."""
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--changed-customers", type=int, default=100)
    parser.add_argument("--invoices", type=int, default=5_000)
    parser.add_argument("--paid-invoices", type=int, default=200)
    parser.add_argument(
        "--database-url", default="sqlite", help="Batchly database server ('sqlite' for a temporary file)"
    )


def _whole_history() -> Window:
    return Window(EPOCH, utcnow() + timedelta(seconds=1))


def _changes_since() -> Window:
    """A window starting now; the accountant's changes made next land in it."""
    start = utcnow().replace(microsecond=0)
    time.sleep(1.1)  # QuickBooks stamps whole seconds: changes start in the next one
    return Window(start, start + timedelta(days=1))


def _customers(args: argparse.Namespace) -> dict[str, Any]:
    seed = {"customers": args.customers, "items": 0, "invoices": 0, "payments": 0, "days": 60, "seed": 11}
    with connected_company(args.database_url, seed) as company:
        pull_customers(company.engine, company.client, company.organization_id, _whole_history())
        reconcile_customers(company.engine, company.organization_id)
        window = _changes_since()
        for n, qbo_id in enumerate(company.seeded["Customer"][: args.changed_customers]):
            fields = {"Notes": f"called on night {n}"}
            company.admin.action(company.realm_id, "update_customer", customer_id=qbo_id, fields=fields)
        started = time.monotonic()
        pulled = pull_customers(company.engine, company.client, company.organization_id, window)
        reconciled = reconcile_customers(company.engine, company.organization_id)
        seconds = time.monotonic() - started
    return {
        "customer_calls": pulled.api_calls,
        "customer_seconds": round(seconds, 2),
        "customers_changed": pulled.changed,
        "customers_updated": reconciled.updated,
    }


def _payments(args: argparse.Namespace) -> dict[str, Any]:
    seed = {"customers": 500, "items": 20, "invoices": args.invoices, "payments": 0, "days": 60, "seed": 12}
    with connected_company(args.database_url, seed) as company:
        _import_with_invoices(company)
        window = _changes_since()
        for n, qbo_id in enumerate(company.seeded["Invoice"][: args.paid_invoices]):
            partly = {} if n % 2 else {"amount": "0.01"}  # half partly paid
            company.admin.action(company.realm_id, "record_payment", invoice_id=qbo_id, **partly)
        pulled = pull_payments(company.engine, company.client, company.organization_id, window)
        reconciled = reconcile_invoice_payments(company.engine, company.organization_id)
    return {
        "payment_calls": pulled.api_calls,
        "invoices_examined": reconciled.examined,
        "invoices_updated": reconciled.updated,
    }


def _import_with_invoices(company: Connected) -> None:
    """The initial import, and Batchly twins of every QuickBooks invoice as the push would have left them."""
    pull_organization(company.engine, company.client, company.organization_id, _whole_history())
    invoices = company.client.read_many("Invoice", company.seeded["Invoice"])
    link_invoices_as_pushed(company.engine, company.organization_id, invoices)
    reconcile_invoice_payments(company.engine, company.organization_id)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure ``customer_calls`` and ``payment_calls`` of the nightly pulls."""
    return {**_customers(args), **_payments(args)}
