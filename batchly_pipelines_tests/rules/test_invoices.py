"""QuickBooks invoices as the push meets them, and the edits of pushed invoices the push refuses."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchly_pipelines.rules.invoices import applied_payments, describe_payments, doc_number_key, is_voided
from batchly_pipelines.rules.validation import IMMUTABLE_MESSAGE, invoice_fingerprint, validate_pushed_invoice
from batchly_pipelines_tests.support.strategies import SETTINGS

INVOICE: dict[str, Any] = {
    "id": 7,
    "customer_id": 1,
    "doc_number": "INV-7",
    "txn_date": date(2026, 3, 1),
    "due_date": date(2026, 3, 31),
    "total_amount": Decimal("30.00"),
    "status": "open",
    "qbo_id": "41",
    "replaces_invoice_id": None,
}
LINES = [
    {"line_no": 1, "item_id": 10, "description": None, "quantity": Decimal(2), "unit_price": Decimal(15),
     "amount": Decimal("30.00")},
]  # fmt: skip
BASE = {"fingerprint": invoice_fingerprint(INVOICE, LINES), "replaces_invoice_id": None}


def _fields(invoice: dict[str, Any], base: dict[str, Any] = BASE, *, voided: bool = False) -> list[str]:
    return [issue.field for issue in validate_pushed_invoice(invoice, LINES, base, voided=voided)]


@SETTINGS
@given(st.text(min_size=1, max_size=21))
def test_doc_numbers_compare_trimmed_and_without_letter_case(doc_number: str) -> None:
    key = doc_number_key(doc_number)
    assert doc_number_key(f"  {doc_number.upper()}\t") == doc_number_key(doc_number.upper())
    assert doc_number_key(doc_number.swapcase()) == doc_number_key(doc_number.swapcase().casefold())
    assert doc_number_key(key) == key  # idempotent


def test_doc_number_key_examples() -> None:
    assert doc_number_key(" INV-7 ") == doc_number_key("inv-7") != doc_number_key("INV-8")


def test_a_void_zeroes_the_amounts_and_notes_it() -> None:
    assert is_voided({"TotalAmt": Decimal(0), "PrivateNote": "Voided - Replaces invoice 1001"})
    assert not is_voided({"TotalAmt": Decimal("40.40"), "PrivateNote": "Voided by hand?"})
    assert not is_voided({"TotalAmt": Decimal(0), "PrivateNote": "free sample"})  # a zero invoice is not void


@pytest.mark.parametrize(
    ("invoice", "paid"),
    [
        ({"TotalAmt": Decimal("40.40"), "Balance": Decimal("40.40")}, None),
        ({"TotalAmt": Decimal("40.40"), "Balance": Decimal("30.40")}, Decimal("10.00")),
        ({"TotalAmt": Decimal("40.40"), "Balance": Decimal(0)}, Decimal("40.40")),
        (
            {"TotalAmt": 40.4, "Balance": 40.4, "LinkedTxn": [{"TxnId": "3", "TxnType": "Payment"}]},
            Decimal(0),
        ),
        ({"TotalAmt": 40.4, "Balance": 40.4, "LinkedTxn": [{"TxnId": "3", "TxnType": "Estimate"}]}, None),
    ],
)
def test_applied_payments(invoice: dict[str, Any], paid: Decimal | None) -> None:
    assert applied_payments(invoice) == paid


def test_describe_payments() -> None:
    assert (
        describe_payments({"TotalAmt": Decimal("40.40"), "Balance": Decimal("30.40")})
        == "10.00 of 40.40 paid"
    )


def test_a_pushed_invoice_unchanged_passes() -> None:
    assert _fields(INVOICE) == []
    assert (
        _fields(INVOICE, {"fingerprint": BASE["fingerprint"]}) == []
    )  # a base from before replaces was recorded


def test_every_edit_of_a_pushed_invoice_is_named() -> None:
    assert _fields(INVOICE | {"status": "draft"}) == ["status"]
    assert _fields(INVOICE | {"replaces_invoice_id": 3}) == ["replaces_invoice_id"]
    assert _fields(INVOICE | {"doc_number": "INV-7b"}) == ["qbo_id"]
    [issue] = validate_pushed_invoice(INVOICE | {"total_amount": Decimal(31)}, LINES, BASE, voided=False)
    assert str(issue) == f"invoice 7 qbo_id: {IMMUTABLE_MESSAGE}"
    [draft] = validate_pushed_invoice(INVOICE | {"status": "draft"}, LINES, BASE, voided=False)
    assert "stays open in QuickBooks" in draft.message


def test_a_voided_invoice_may_be_void_or_draft_but_not_reopened() -> None:
    assert _fields(INVOICE | {"status": "void"}, voided=True) == []
    assert _fields(INVOICE | {"status": "draft"}, voided=True) == []
    assert _fields(INVOICE, voided=True) == ["status"]
