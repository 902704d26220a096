"""End to end with Dagster, the receiver and the sandbox really running: changes an accountant makes in QuickBooks
reach Batchly through webhooks alone, and one no webhook brought through the CDC sweep a receiver's start makes due.

The sandbox delivers signed CloudEvents to the receiver (uvicorn, in this process); ``dagster dev`` runs the real
definitions, whose ``webhook_inbox_sensor`` (RUNNING by default) starts the targeted pulls. Nothing is pulled or
launched by hand after the baseline pull. The time from each change until Batchly shows it is measured.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.services.pull.organization import pull_organization
from batchly_pipelines.services.webhooks.receiver import create_app
from batchly_pipelines.services.webhooks.server import ReceiverServer
from batchly_pipelines.store import migrate
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.db import create_engine
from batchly_pipelines.store.webhook_repair import realm_repairs, record_receiver_start
from batchly_pipelines_tests.support import factories
from batchly_pipelines_tests.support.dagster_stack import DagsterStack
from batchly_pipelines_tests.support.pull import Company, link_invoices_as_pushed
from batchly_pipelines_tests.support.quickbooks import SandboxTokens
from batchly_pipelines_tests.support.sandbox_client import Qbo
from batchly_pipelines_tests.support.webhooks import VERIFIER, connect, inbox
from qbo_sandbox.server import SandboxConfig, SandboxServer

DEADLINE_S = 60.0
SPACING_S = 1.0


@pytest.mark.e2e
@pytest.mark.slow
def test_quickbooks_changes_reach_batchly_through_webhooks(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'batchly.sqlite'}"
    secret_key = Fernet.generate_key().decode()
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    receiver = ReceiverServer(create_app(engine, VERIFIER), log_level="warning")
    with SandboxServer(SandboxConfig(port=0, throttle=False)) as sandbox:
        qbo = Qbo(sandbox)
        with engine.begin() as conn:
            org = factories.organization(conn)
        connect(engine, org, qbo.realm_id, sandbox.base_url, secret_key)
        customers = [qbo.customer(f"Webhook Customer {n}") for n in range(4)]
        item = qbo.item("Hours", "50.00")
        invoices = [qbo.invoice(customers[0], item, "100.00", DueDate="2099-01-01") for _ in range(3)]
        paid_before = qbo.payment(invoices[2], "100.00")
        with QuickBooksClient(
            qbo.realm_id, sandbox.base_url, SandboxTokens(sandbox.base_url, qbo.realm_id)
        ) as client:
            # the baseline: the invoices as the push left them, and what the nightly pulls did
            pull_organization(engine, client, org, Company.window())
            link_invoices_as_pushed(engine, org, invoices)
            pull_organization(engine, client, org, Company.window())
        company = Company(engine, sandbox, org, qbo, client)
        assert company.row(s.invoices, qbo_id=invoices[2]["Id"])["payment_status"] == "paid"
        env = {
            "BATCHLY_DATABASE_URL": database_url,
            "BATCHLY_SECRET_KEY": secret_key,
            "QBO_ENVIRONMENT": "local",
            "QBO_BASE_URL": sandbox.base_url,
        }
        with receiver.running(), DagsterStack(tmp_path / "dagster_home", env) as dagster:
            qbo.admin.configure_webhooks(receiver.url, VERIFIER, "cloudevents")
            # warm-up, not measured: the daemon's first sensor ticks come a while after the webserver is up
            company.act("update_customer", customer_id=customers[3]["Id"], fields={"Notes": "warm-up"})
            _until(lambda: company.row(s.customers, qbo_id=customers[3]["Id"])["notes"] == "warm-up")
            expected = _accountant_changes(company, customers, item, invoices, paid_before)
            made: dict[str, float] = {}
            seen: dict[str, float] = {}
            for name, (act, _) in expected.items():
                act()
                made[name] = time.monotonic()
                _watch(company, expected, made, seen, until=time.monotonic() + SPACING_S)
            _watch(company, expected, made, seen, until=time.monotonic() + DEADLINE_S)
            # a change no webhook brings (the sandbox stops delivering, as while a receiver is down); the receiver
            # "comes back": its start makes the realm's CDC sweep due at once, and the sweep brings the change
            qbo.admin.configure_webhooks(None)
            company.act(
                "update_customer", customer_id=customers[3]["Id"], fields={"Notes": "repaired by CDC"}
            )
            record_receiver_start(engine, receiver.url)
            repair_started = time.monotonic()
            _until(
                lambda: company.row(s.customers, qbo_id=customers[3]["Id"])["notes"] == "repaired by CDC",
                what="the change without a webhook",
            )
            repair_s = time.monotonic() - repair_started
            runs = dagster.settled_runs()
        qbo.admin.configure_webhooks(None, VERIFIER, "cloudevents")

    latencies = sorted(seen[name] - made[name] for name in seen)
    p50 = statistics.median(latencies) if latencies else float("nan")
    p95 = latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan")
    pulls = [run for run in runs if {"key": "batchly/webhook-realm", "value": qbo.realm_id} in run["tags"]]
    print(
        f"\nwebhook latency over {len(latencies)} changes: p50 {p50:.1f}s, p95 {p95:.1f}s, {len(pulls)} pull run(s); "
        f"a change without a webhook repaired by CDC in {repair_s:.1f}s"
    )
    assert sorted(seen) == sorted(expected), f"never reached Batchly: {sorted(set(expected) - set(seen))}"
    assert pulls and all(run["status"] == "SUCCESS" for run in pulls)
    events = inbox(engine)
    assert events and {row["status"] for row in events} == {"done"}
    assert {row["run_id"] for row in events} <= {run["runId"] for run in pulls}
    with engine.connect() as conn:
        assert (
            realm_repairs(conn, [qbo.realm_id])[qbo.realm_id].gaps == 1
        )  # the last sweep found the one change


Change = tuple[Callable[[], Any], Callable[[], bool]]


def _accountant_changes(
    company: Company,
    customers: list[dict[str, Any]],
    item: dict[str, Any],
    invoices: list[dict[str, Any]],
    paid_before: dict[str, Any],
) -> dict[str, Change]:
    """What the accountant does in QuickBooks, and how Batchly shows each change once it arrived."""

    def customer(qbo_id: str) -> dict[str, Any]:
        return company.row(s.customers, qbo_id=qbo_id)

    def invoice(qbo_id: str) -> dict[str, Any]:
        return company.row(s.invoices, qbo_id=qbo_id)

    return {
        "customer notes": (
            lambda: company.act(
                "update_customer", customer_id=customers[0]["Id"], fields={"Notes": "via webhook"}
            ),
            lambda: customer(customers[0]["Id"])["notes"] == "via webhook",
        ),
        "item price": (
            lambda: company.act("set_item_price", item_id=item["Id"], unit_price="65.00"),
            lambda: company.row(s.items, qbo_id=item["Id"])["unit_price"] == Decimal("65.00"),
        ),
        "payment": (
            lambda: company.act("record_payment", invoice_id=invoices[0]["Id"]),
            lambda: invoice(invoices[0]["Id"])["payment_status"] == "paid",
        ),
        "void": (
            lambda: company.act("void_invoice", invoice_id=invoices[1]["Id"]),
            lambda: invoice(invoices[1]["Id"])["payment_status"] == "voided",
        ),
        "payment deleted": (
            lambda: company.act("delete_payment", payment_id=paid_before["Id"]),
            lambda: invoice(invoices[2]["Id"])["payment_status"] == "unpaid",
        ),
        "customer deactivated": (
            lambda: company.act("deactivate", entity="Customer", id=customers[1]["Id"]),
            lambda: customer(customers[1]["Id"])["is_active"] is False,
        ),
        "customer email": (
            lambda: company.act(
                "update_customer",
                customer_id=customers[2]["Id"],
                fields={"PrimaryEmailAddr": {"Address": "a@b.co"}},
            ),
            lambda: customer(customers[2]["Id"])["email"] == "a@b.co",
        ),
    }


def _until(condition: Callable[[], bool], timeout: float = 120.0, what: str = "the warm-up change") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} never reached Batchly"
        time.sleep(0.2)


def _watch(
    company: Company,
    expected: dict[str, Change],
    made: dict[str, float],
    seen: dict[str, float],
    until: float,
) -> None:
    """Note when each change made so far first shows in Batchly, until ``until`` or all have."""
    while time.monotonic() < until and len(seen) < len(expected):
        now = time.monotonic()
        for name in made:
            if name not in seen and expected[name][1]():
                seen[name] = now
        time.sleep(0.2)
