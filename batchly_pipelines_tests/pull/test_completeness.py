"""Nothing QuickBooks did is left out of Batchly (issue 10): deletions of invoices the mirror never held, refunds
and credits, deletions behind a saturated CDC answer, a window whose last second is crowded, and a QuickBooks clock
that runs behind or ahead of ours."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from batchly_pipelines.quickbooks.wire import qbo_last_updated
from batchly_pipelines.services.pull.mirror import Window
from batchly_pipelines.services.pull.organization import (
    EPOCH,
    pull_customers,
    pull_organization,
    pull_payments,
    reconcile_invoice_payments,
    window_since_cursor,
)
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.db import sync_transaction
from batchly_pipelines_tests.support import factories
from batchly_pipelines_tests.support.pull import Company, link_invoices_as_pushed, queue

COLUMNS = (
    "payment_status",
    "amount_paid",
    "amount_due",
    "amount_credited",
    "amount_refunded",
    "qb_payment_id",
)
VOIDED = ("voided", Decimal("0.00"), Decimal("0.00"), Decimal("0.00"), Decimal("0.00"), None)


def _columns(company: Company, invoice_id: int) -> tuple[Any, ...]:
    row = company.row(s.invoices, id=invoice_id)
    return tuple(row.get(column) for column in COLUMNS)


def _pushed_invoice(company: Company, amount: str = "100.00") -> tuple[dict[str, Any], int]:
    """An invoice of ``amount`` the push created in QuickBooks and linked in Batchly, which no pull has read yet."""
    customer = company.qbo.customer("Payer")
    item = company.qbo.item("Service", amount)
    company.pull()
    qbo_invoice = company.qbo.invoice(customer, item, amount)
    customer_id = company.row(s.customers, qbo_id=customer["Id"])["id"]
    item_id = company.row(s.items, qbo_id=item["Id"])["id"]
    with sync_transaction(company.engine) as conn:  # as the push leaves it: nothing queued
        invoice_id = factories.invoice(conn, company.org, customer_id, item_id, doc_number="B-1", lines=1)
        conn.execute(
            sa.update(s.invoices)
            .where(s.invoices.c.id == invoice_id)
            .values(qbo_id=qbo_invoice["Id"], total_amount=Decimal(amount), sync_status="synced")
        )
    return qbo_invoice, invoice_id


@pytest.mark.parametrize("reach", ["within CDC's 30 days", "older than CDC reaches"])
def test_an_invoice_deleted_in_quickbooks_before_any_pull_mirrored_it_is_settled(
    company: Company, reach: str
) -> None:
    qbo_invoice, invoice_id = _pushed_invoice(company)
    company.act("delete_invoice", invoice_id=qbo_invoice["Id"])
    # a window CDC reaches sees the deletion; any other one still reads the linked invoices it has never mirrored
    window = company.window() if reach.startswith("within") else Window(EPOCH, EPOCH + timedelta(days=1))
    stats = pull_payments(company.engine, company.client, company.org, window)
    reconcile_invoice_payments(company.engine, company.org)
    assert _columns(company, invoice_id) == VOIDED  # nothing owed for good, nothing paid
    assert stats.by_entity["Invoice"]["deleted"] == 1
    assert company.pull().batchly_invoices.examined == 0
    assert queue(company.engine) == []


def _refund(company: Company, qbo_invoice: dict[str, Any], txn_type: str, txn_id: str) -> dict[str, Any]:
    body = {
        "CustomerRef": qbo_invoice["CustomerRef"],
        "Line": [line for line in qbo_invoice["Line"] if line["DetailType"] == "SalesItemLineDetail"],
        "LinkedTxn": [{"TxnId": txn_id, "TxnType": txn_type}],
    }
    return company.qbo.create("RefundReceipt", body)


@pytest.mark.parametrize("names", ["Invoice", "Payment"])
def test_a_refund_after_a_full_payment_shows_the_invoice_refunded(company: Company, names: str) -> None:
    qbo_invoice, invoice_id = _pushed_invoice(company)
    payment = company.act("record_payment", invoice_id=qbo_invoice["Id"])["Payment"]
    company.pull()
    assert _columns(company, invoice_id)[:3] == ("paid", Decimal("100.00"), Decimal("0.00"))

    refund = _refund(company, qbo_invoice, names, qbo_invoice["Id"] if names == "Invoice" else payment["Id"])
    result = company.pull()
    assert _columns(company, invoice_id) == (
        "refunded",
        Decimal("100.00"),
        Decimal("0.00"),
        Decimal("0.00"),
        Decimal("100.00"),
        payment["Id"],
    )
    assert result.payments.by_entity["RefundReceipt"]["changed"] == 1
    assert company.pull().batchly_invoices.examined == 0  # nothing new: nothing examined

    deleted = company.qbo.post(
        "refundreceipt", {"Id": refund["Id"], "SyncToken": refund["SyncToken"]}, operation="delete"
    )
    company.qbo.ok(deleted)
    company.pull()
    assert _columns(company, invoice_id)[:5] == (
        "paid",
        Decimal("100.00"),
        Decimal("0.00"),
        Decimal("0.00"),
        Decimal("0.00"),
    )
    assert queue(company.engine) == []


def test_a_credit_memo_applied_through_a_payment_shows_as_credit(company: Company) -> None:
    qbo_invoice, invoice_id = _pushed_invoice(company)
    item_ref = qbo_invoice["Line"][0]["SalesItemLineDetail"]["ItemRef"]
    line = {
        "DetailType": "SalesItemLineDetail",
        "Amount": Decimal("30.00"),
        "SalesItemLineDetail": {"ItemRef": item_ref},
    }
    credit = company.qbo.create("CreditMemo", {"CustomerRef": qbo_invoice["CustomerRef"], "Line": [line]})
    payment = company.qbo.create(
        "Payment",
        {
            "CustomerRef": qbo_invoice["CustomerRef"],
            "TotalAmt": Decimal("70.00"),
            "Line": [
                {
                    "Amount": Decimal("100.00"),
                    "LinkedTxn": [{"TxnId": qbo_invoice["Id"], "TxnType": "Invoice"}],
                },
                {"Amount": Decimal("30.00"), "LinkedTxn": [{"TxnId": credit["Id"], "TxnType": "CreditMemo"}]},
            ],
        },
    )
    company.pull()
    assert _columns(company, invoice_id) == (
        "paid",
        Decimal("100.00"),
        Decimal("0.00"),
        Decimal("30.00"),
        Decimal("0.00"),
        payment["Id"],
    )
    company.act("delete_payment", payment_id=payment["Id"])
    company.pull()
    assert _columns(company, invoice_id)[:4] == (
        "unpaid",
        Decimal("0.00"),
        Decimal("100.00"),
        Decimal("0.00"),
    )


def _one_second(company: Company, **plan: int) -> None:
    """Seeded data whose every MetaData time is the same second."""
    company.qbo.admin.seed(
        company.qbo.realm_id, **{"customers": 0, "items": 0, "invoices": 0, "payments": 0, **plan, "days": 0}
    )


def test_a_window_whose_last_second_holds_more_than_a_page_is_read_whole(company: Company) -> None:
    _one_second(company, customers=1100)
    second = qbo_last_updated(company.client.query("SELECT * FROM Customer MAXRESULTS 1").rows[0])
    window = Window(second - timedelta(days=1), second + timedelta(seconds=1))  # that second ends the window
    stats = pull_customers(company.engine, company.client, company.org, window)
    assert (stats.pulled, stats.changed) == (1100, 1100)
    again = pull_customers(company.engine, company.client, company.org, window)
    assert (again.pulled, again.changed) == (1100, 0)


def test_a_deletion_behind_a_saturated_cdc_second_is_not_lost(company: Company) -> None:
    _one_second(
        company, customers=3, items=2, invoices=1100
    )  # more invoice changes in one second than CDC answers
    company.pull()
    victim = company.client.query("SELECT * FROM Invoice MAXRESULTS 1").rows[0]
    link_invoices_as_pushed(company.engine, company.org, [victim])
    company.pull()
    invoice_id = company.row(s.invoices, qbo_id=victim["Id"])["id"]
    assert _columns(company, invoice_id)[0] in ("unpaid", "overdue")

    company.act("delete_invoice", invoice_id=victim["Id"])
    result = company.pull()
    assert _columns(company, invoice_id) == VOIDED
    assert result.payments.by_entity["Invoice"]["deleted"] == 1


def _incremental_pull(company: Company) -> None:
    """What ``batchly-sync pull`` does without ``--since``: from the organisation's cursors to now."""
    window = window_since_cursor(company.engine, company.org)
    pull_organization(company.engine, company.client, company.org, window)


@pytest.mark.parametrize("skew", [-120, 300], ids=["quickbooks-2-min-behind", "quickbooks-5-min-ahead"])
def test_an_edit_after_an_incremental_pull_is_read_by_the_next_one_whatever_quickbooks_clock_says(
    company: Company, skew: int
) -> None:
    with company.qbo.admin.clock_advanced(skew):
        ada = company.qbo.customer("Ada", Notes="first")
        _incremental_pull(company)
        assert company.row(s.customers, qbo_id=ada["Id"])["notes"] == "first"
        company.act("update_customer", customer_id=ada["Id"], fields={"Notes": "second"})
        _incremental_pull(company)
        assert company.row(s.customers, qbo_id=ada["Id"])["notes"] == "second"
        _incremental_pull(company)  # and a pull with nothing new changes nothing
        assert company.row(s.customers, qbo_id=ada["Id"])["notes"] == "second"
    assert queue(company.engine) == []
