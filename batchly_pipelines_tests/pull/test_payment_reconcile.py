"""Payment columns of Batchly invoices: an invoice deleted in QuickBooks, and a mirror write racing a reconciliation."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest

from batchly_pipelines.services.pull.invoice_payments import linked_ids
from batchly_pipelines.services.pull.mirror import store_objects
from batchly_pipelines.services.pull.organization import pull_payments, reconcile_invoice_payments
from batchly_pipelines.store import schema as s
from batchly_pipelines_tests.pull.test_scenarios import _linked_invoice
from batchly_pipelines_tests.support.pull import Company, queue

PAYMENT = ("payment_status", "amount_paid", "amount_due", "payment_date", "qb_payment_id")


def _payment_columns(company: Company, invoice_id: int) -> tuple[object, ...]:
    row = company.row(s.invoices, id=invoice_id)
    return tuple(row[column] for column in PAYMENT)


def test_an_invoice_deleted_in_quickbooks_after_its_payment_shows_no_payment(company: Company) -> None:
    qbo_invoice, invoice_id = _linked_invoice(company, date.today() + timedelta(days=30))
    payment = company.act("record_payment", invoice_id=qbo_invoice["Id"], amount="40.00")["Payment"]
    company.pull()
    assert _payment_columns(company, invoice_id)[0] == "partial"

    company.act("delete_payment", payment_id=payment["Id"])
    company.act("delete_invoice", invoice_id=qbo_invoice["Id"])
    result = company.pull()
    assert result.payments.by_entity["Invoice"]["deleted"] == 1
    # settled as a void: nothing paid, nothing due, no payment; the Batchly invoice itself stays
    assert _payment_columns(company, invoice_id) == ("voided", Decimal("0.00"), Decimal("0.00"), None, None)
    assert company.pull().batchly_invoices.examined == 0
    assert queue(company.engine) == []


@pytest.mark.postgres
@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_a_mirror_row_committed_after_a_concurrent_reconciliation_read_it_is_reconciled_next_time(
    company: Company,
) -> None:
    qbo_invoice, invoice_id = _linked_invoice(company, date.today() + timedelta(days=30))
    company.act("record_payment", invoice_id=qbo_invoice["Id"], amount="40.00")
    pull_payments(company.engine, company.client, company.org, company.window())  # mirrored, not reconciled
    company.act("record_payment", invoice_id=qbo_invoice["Id"])  # paid in full now
    paid = company.client.read("Invoice", qbo_invoice["Id"])
    with company.engine.connect() as conn, conn.begin():  # a concurrent pull mirrors it, committing late
        store_objects(conn, company.org, "Invoice", [paid], force=True)
        payments = company.client.read_many("Payment", linked_ids(paid, "Payment"))
        store_objects(conn, company.org, "Payment", payments)
        # meanwhile a reconciliation reads the committed (partly paid) mirror and records having seen it
        reconcile_invoice_payments(company.engine, company.org)
        assert _payment_columns(company, invoice_id)[0] == "partial"
    reconcile_invoice_payments(company.engine, company.org)
    assert _payment_columns(company, invoice_id)[:3] == ("paid", Decimal("100.00"), Decimal("0.00"))
    assert reconcile_invoice_payments(company.engine, company.org).examined == 0
