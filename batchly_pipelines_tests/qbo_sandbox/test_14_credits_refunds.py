"""Checklist 6, continued: a credit memo applied to an invoice through a Payment line, and refund receipts that name
the invoice or payment they refund."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from batchly_pipelines_tests.support.sandbox_client import Qbo, fault_code


@pytest.fixture
def invoiced(qbo: Qbo) -> tuple[Qbo, dict[str, Any]]:
    customer, item = qbo.customer("Payer"), qbo.item()
    return qbo, qbo.invoice(customer, item, "100.00")


def _credit_memo(qbo: Qbo, invoice: dict[str, Any], amount: str) -> dict[str, Any]:
    line = invoice["Line"][0]
    body = {
        "CustomerRef": invoice["CustomerRef"],
        "Line": [
            {
                "DetailType": "SalesItemLineDetail",
                "Amount": Decimal(amount),
                "SalesItemLineDetail": {"ItemRef": line["SalesItemLineDetail"]["ItemRef"]},
            }
        ],
    }
    return qbo.create("CreditMemo", body)


def _apply_credit(qbo: Qbo, invoice: dict[str, Any], credit: dict[str, Any], amount: str, cash: str = "0"):
    lines = [
        {
            "Amount": Decimal(amount) + Decimal(cash),
            "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}],
        },
        {"Amount": Decimal(amount), "LinkedTxn": [{"TxnId": credit["Id"], "TxnType": "CreditMemo"}]},
    ]
    return qbo.post(
        "payment", {"CustomerRef": invoice["CustomerRef"], "TotalAmt": Decimal(cash), "Line": lines}
    )


def test_a_payment_line_applies_a_credit_memo_to_an_invoice(invoiced: tuple[Qbo, dict[str, Any]]) -> None:
    qbo, invoice = invoiced
    credit = _credit_memo(qbo, invoice, "30.00")
    payment = qbo.ok(_apply_credit(qbo, invoice, credit, "30.00", cash="20.00"))["Payment"]
    assert payment["TotalAmt"] == Decimal("20.00") and payment["UnappliedAmt"] == Decimal("0.00")
    assert [link["TxnType"] for line in payment["Line"] for link in line["LinkedTxn"]] == [
        "Invoice",
        "CreditMemo",
    ]
    after = qbo.read("Invoice", invoice["Id"])
    assert after["Balance"] == Decimal("50.00")  # 30 of credit and 20 of cash
    assert after["LinkedTxn"] == [{"TxnId": payment["Id"], "TxnType": "Payment"}]
    used = qbo.read("CreditMemo", credit["Id"])
    assert (used["Balance"], used["RemainingCredit"], used["SyncToken"]) == (
        Decimal("0.00"),
        Decimal("0.00"),
        "1",
    )

    # a credit memo that is applied cannot be deleted; deleting the payment gives the credit back
    refused = qbo.post("creditmemo", {"Id": credit["Id"], "SyncToken": used["SyncToken"]}, operation="delete")
    assert refused.status_code == 400 and fault_code(refused) == "6000"
    qbo.ok(qbo.post("payment", {"Id": payment["Id"], "SyncToken": payment["SyncToken"]}, operation="delete"))
    assert qbo.read("Invoice", invoice["Id"])["Balance"] == Decimal("100.00")
    assert qbo.read("CreditMemo", credit["Id"])["RemainingCredit"] == Decimal("30.00")


@pytest.mark.parametrize(
    ("credit_amount", "applied", "code"),
    [("30.00", "40.00", "6000"), ("30.00", "30.00", None)],  # more than the memo's remaining credit
)
def test_a_credit_line_cannot_apply_more_than_the_memo_has_left(
    invoiced: tuple[Qbo, dict[str, Any]], credit_amount: str, applied: str, code: str | None
) -> None:
    qbo, invoice = invoiced
    credit = _credit_memo(qbo, invoice, credit_amount)
    response = _apply_credit(qbo, invoice, credit, applied)
    if code is None:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 400 and fault_code(response) == code


def test_a_credit_line_naming_an_unknown_memo_is_not_found(invoiced: tuple[Qbo, dict[str, Any]]) -> None:
    qbo, invoice = invoiced
    response = _apply_credit(qbo, invoice, {"Id": "99999"}, "10.00")
    assert response.status_code == 400 and fault_code(response) == "610"


def test_a_refund_receipt_keeps_the_invoice_or_payment_it_names(invoiced: tuple[Qbo, dict[str, Any]]) -> None:
    qbo, invoice = invoiced
    payment = qbo.payment(invoice, "100.00")
    body = {
        "CustomerRef": invoice["CustomerRef"],
        "Line": invoice["Line"][:1],
        "LinkedTxn": [{"TxnId": payment["Id"], "TxnType": "Payment"}],
    }
    refund = qbo.create("RefundReceipt", body)
    assert refund["LinkedTxn"] == [{"TxnId": payment["Id"], "TxnType": "Payment"}]
    assert qbo.read("Invoice", invoice["Id"])["Balance"] == Decimal(
        "0.00"
    )  # a refund leaves the balance alone
    unknown = qbo.post("refundreceipt", {**body, "LinkedTxn": [{"TxnId": "99999", "TxnType": "Invoice"}]})
    assert unknown.status_code == 400 and fault_code(unknown) == "610"
