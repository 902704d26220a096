"""After a backfill of a seeded company's whole history, Batchly equals QuickBooks field by field for every linked
record — QuickBooks read over HTTP, Batchly read from its tables."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from batchly_pipelines.rules.mapping import CUSTOMER_MAPPING, ITEM_MAPPING
from batchly_pipelines.rules.payments import (
    RefundTargets,
    payment_facts_from_qbo,
    payment_state,
    refund_targets,
    today_in,
)
from batchly_pipelines.services.pull.organization import pull_organization
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.support.pull import Company, link_invoices_as_pushed, queue

PLAN = {"customers": 5000, "items": 500, "invoices": 3000, "payments": 2000, "days": 60, "seed": 5}


def _all(company: Company, entity: str) -> Iterator[dict[str, Any]]:
    """Every object of ``entity`` in QuickBooks, inactive ones included, through the query endpoint."""
    active = " WHERE Active IN (true, false)" if entity in ("Customer", "Item") else ""
    start = 1
    while True:
        page = company.qbo.query(f"SELECT * FROM {entity}{active} STARTPOSITION {start} MAXRESULTS 1000")
        rows = page.get(entity, [])
        yield from rows
        if len(rows) < 1000:
            return
        start += 1000


@pytest.mark.slow
def test_batchly_equals_quickbooks_after_a_backfill_of_the_whole_history(company: Company) -> None:
    company.qbo.admin.seed(company.qbo.realm_id, **PLAN)
    window = company.window()
    first = pull_organization(company.engine, company.client, company.org, window)
    assert first.batchly_customers.created == PLAN["customers"]
    assert first.batchly_items.created == PLAN["items"]
    link_invoices_as_pushed(company.engine, company.org, _all(company, "Invoice"))
    result = pull_organization(company.engine, company.client, company.org, window)
    assert result.batchly_invoices.examined == PLAN["invoices"]

    with company.engine.connect() as conn:
        customers = {r["qbo_id"]: dict(r) for r in conn.execute(sa.select(s.customers)).mappings()}
        items = {r["qbo_id"]: dict(r) for r in conn.execute(sa.select(s.items)).mappings()}
        invoices = {r["qbo_id"]: dict(r) for r in conn.execute(sa.select(s.invoices)).mappings()}
        timezone = conn.execute(sa.select(s.organizations.c.timezone)).scalar_one()

    qbo_customers = list(_all(company, "Customer"))
    assert len(qbo_customers) == len(customers) == PLAN["customers"]
    for obj in qbo_customers:
        assert CUSTOMER_MAPPING.from_row(customers[obj["Id"]]) == CUSTOMER_MAPPING.from_qbo(obj), obj["Id"]
    qbo_items = list(_all(company, "Item"))
    assert len(qbo_items) == len(items) == PLAN["items"]
    for obj in qbo_items:
        assert ITEM_MAPPING.from_row(items[obj["Id"]]) == ITEM_MAPPING.from_qbo(obj), obj["Id"]

    payments = {p["Id"]: p for p in _all(company, "Payment")}
    qbo_invoices = {i["Id"]: i for i in _all(company, "Invoice")}
    refunds = list(_all(company, "RefundReceipt"))
    targets = RefundTargets(qbo_invoices, payments)
    today = today_in(timezone, utcnow())
    statuses = set()
    for obj in qbo_invoices.values():
        linked_payments = [link["TxnId"] for link in obj.get("LinkedTxn", []) if link["TxnType"] == "Payment"]
        named = {("Invoice", obj["Id"]), *(("Payment", pid) for pid in linked_payments)}
        its_refunds = [r for r in refunds if named & set(refund_targets(r))]
        linked = [payments[pid] for pid in linked_payments]
        expected = payment_state(
            payment_facts_from_qbo(obj, linked, its_refunds, targets), today=today
        ).as_columns()
        row = invoices[obj["Id"]]
        assert {key: row[key] for key in expected} == expected, obj["Id"]
        assert row["amount_due"] == Decimal(str(obj["Balance"]))
        statuses.add(row["payment_status"])
    assert {"paid", "partial", "overdue", "refunded"} <= statuses  # seeded kinds, none lost
    assert queue(company.engine) == []
