"""Checklist 6: derived amounts, payments and LinkedTxn both ways, deletes and voids restoring balances."""

from __future__ import annotations

from decimal import Decimal

import pytest

from batchly_pipelines_tests.support.sandbox_client import Qbo, fault_code


@pytest.fixture
def invoiced(qbo: Qbo) -> tuple[Qbo, dict]:
    customer, item = qbo.customer("Payer"), qbo.item()
    return qbo, qbo.invoice(customer, item, "100.10", "0.20", PrivateNote="net 30")


def test_total_is_sum_of_lines(invoiced: tuple[Qbo, dict]) -> None:
    _, invoice = invoiced
    assert invoice["TotalAmt"] == Decimal("100.30") and invoice["Balance"] == Decimal("100.30")
    assert invoice["LinkedTxn"] == []


def test_payments_reduce_balance_and_link_both_ways(invoiced: tuple[Qbo, dict]) -> None:
    qbo, invoice = invoiced
    payment = qbo.payment(invoice, "40.10", total="50.00")
    assert payment["UnappliedAmt"] == Decimal("9.90")
    assert payment["Line"][0]["LinkedTxn"] == [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]
    after = qbo.read("Invoice", invoice["Id"])
    assert after["Balance"] == Decimal("60.20")
    assert after["LinkedTxn"] == [{"TxnId": payment["Id"], "TxnType": "Payment"}]
    assert after["SyncToken"] == "1"
    customer = qbo.read("Customer", invoice["CustomerRef"]["value"])
    assert customer["Balance"] == Decimal("60.20")


def test_overpaying_an_invoice_is_rejected(invoiced: tuple[Qbo, dict]) -> None:
    qbo, invoice = invoiced
    response = qbo.post(
        "payment",
        {
            "CustomerRef": invoice["CustomerRef"],
            "TotalAmt": 200,
            "Line": [{"Amount": 200, "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}],
        },
    )
    assert fault_code(response) == "6000"
    assert qbo.read("Invoice", invoice["Id"])["Balance"] == Decimal("100.30")


def test_deleting_a_payment_restores_the_balance(invoiced: tuple[Qbo, dict]) -> None:
    qbo, invoice = invoiced
    payment = qbo.payment(invoice, "100.30")
    assert qbo.read("Invoice", invoice["Id"])["Balance"] == 0
    deleted = qbo.ok(qbo.post("payment", {"Id": payment["Id"], "SyncToken": "0"}, operation="delete"))
    assert deleted["Payment"] == {"status": "Deleted", "domain": "QBO", "Id": payment["Id"]}
    after = qbo.read("Invoice", invoice["Id"])
    assert after["Balance"] == Decimal("100.30") and after["LinkedTxn"] == []
    assert fault_code(qbo.get(f"payment/{payment['Id']}")) == "610"


def test_voiding_a_payment_restores_the_balance(invoiced: tuple[Qbo, dict]) -> None:
    qbo, invoice = invoiced
    payment = qbo.payment(invoice, "30.00")
    voided = qbo.ok(
        qbo.post("payment", {"Id": payment["Id"], "SyncToken": "0"}, operation="update", include="void")
    )
    assert voided["Payment"]["TotalAmt"] == 0 and voided["Payment"]["PrivateNote"].startswith("Voided")
    assert voided["Payment"]["SyncToken"] == "1"
    assert qbo.read("Invoice", invoice["Id"])["Balance"] == Decimal("100.30")


def test_updating_a_payment_reapplies_it(invoiced: tuple[Qbo, dict]) -> None:
    qbo, invoice = invoiced
    payment = qbo.payment(invoice, "30.00")
    line = {"Amount": Decimal("70.00"), "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}
    qbo.create("Payment", {**payment, "TotalAmt": Decimal("70.00"), "Line": [line]})
    assert qbo.read("Invoice", invoice["Id"])["Balance"] == Decimal("30.30")


def test_invoice_void(invoiced: tuple[Qbo, dict]) -> None:
    qbo, invoice = invoiced
    voided = qbo.ok(
        qbo.post("invoice", {"Id": invoice["Id"], "SyncToken": invoice["SyncToken"]}, operation="void")
    )
    body = voided["Invoice"]
    assert body["TotalAmt"] == 0 and body["Balance"] == 0 and body["SyncToken"] == "1"
    assert body["PrivateNote"] == "Voided - net 30"
    assert all(line["Amount"] == 0 for line in body["Line"])
    assert qbo.read("Customer", invoice["CustomerRef"]["value"])["Balance"] == 0


def test_invoice_with_payments_cannot_be_voided_or_deleted(invoiced: tuple[Qbo, dict]) -> None:
    qbo, invoice = invoiced
    qbo.payment(invoice, "1.00")
    current = qbo.read("Invoice", invoice["Id"])
    ref = {"Id": current["Id"], "SyncToken": current["SyncToken"]}
    assert fault_code(qbo.post("invoice", ref, operation="void")) == "6000"
    assert fault_code(qbo.post("invoice", ref, operation="delete")) == "6000"


def test_deleted_invoice_answer(invoiced: tuple[Qbo, dict]) -> None:
    qbo, invoice = invoiced
    body = qbo.ok(qbo.post("invoice", {"Id": invoice["Id"], "SyncToken": "0"}, operation="delete"))
    assert body["Invoice"] == {"status": "Deleted", "domain": "QBO", "Id": invoice["Id"]}
    assert qbo.query("SELECT COUNT(*) FROM Invoice")["totalCount"] == 0


def test_names_cannot_be_deleted(qbo: Qbo) -> None:
    customer = qbo.customer()
    response = qbo.post("customer", {"Id": customer["Id"], "SyncToken": "0"}, operation="delete")
    assert response.status_code == 400


def test_refund_receipt_and_credit_memo(invoiced: tuple[Qbo, dict]) -> None:
    qbo, invoice = invoiced
    body = {"CustomerRef": invoice["CustomerRef"], "Line": invoice["Line"][:1]}
    refund = qbo.create("RefundReceipt", body)
    credit = qbo.create("CreditMemo", body)
    assert refund["TotalAmt"] == Decimal("100.10") and refund["Balance"] == 0
    assert credit["TotalAmt"] == Decimal("100.10") and credit["RemainingCredit"] == Decimal("100.10")
