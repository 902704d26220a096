"""Credits and refunds in an invoice's payment columns: credit memos applied through payments, refund receipts that
name an invoice or a payment, and the ``refunded`` status."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from batchly_pipelines.rules.payments import (
    PaymentStatus,
    RefundTargets,
    overdue_status,
    payment_facts_from_qbo,
    payment_state,
    refund_shares,
)
from batchly_pipelines_tests.support.strategies import SETTINGS

TODAY = date(2026, 3, 15)


def _invoice(invoice_id: str, total: str, balance: str, *payments: str) -> dict[str, Any]:
    return {
        "Id": invoice_id,
        "TotalAmt": Decimal(total),
        "Balance": Decimal(balance),
        "DueDate": "2026-03-31",
        "LinkedTxn": [{"TxnId": pid, "TxnType": "Payment"} for pid in payments],
    }


def _payment(payment_id: str, *lines: tuple[str, str, str]) -> dict[str, Any]:
    """Lines are (TxnType, TxnId, amount)."""
    return {
        "Id": payment_id,
        "TxnDate": "2026-03-02",
        "Line": [
            {"Amount": Decimal(amount), "LinkedTxn": [{"TxnId": txn_id, "TxnType": txn_type}]}
            for txn_type, txn_id, amount in lines
        ],
    }


def _refund(refund_id: str, total: str, *links: tuple[str, str]) -> dict[str, Any]:
    return {
        "Id": refund_id,
        "TxnDate": "2026-03-10",
        "TotalAmt": Decimal(total),
        "LinkedTxn": [{"TxnType": txn_type, "TxnId": txn_id} for txn_type, txn_id in links],
    }


def test_a_fully_paid_invoice_refunded_in_full_is_refunded() -> None:
    invoice = _invoice("1", "100.00", "0.00", "2")
    payment = _payment("2", ("Invoice", "1", "100.00"))
    for refund in (_refund("3", "100.00", ("Invoice", "1")), _refund("3", "100.00", ("Payment", "2"))):
        state = payment_state(payment_facts_from_qbo(invoice, [payment], [refund]), today=TODAY)
        assert (state.payment_status, state.amount_paid, state.amount_refunded) == (
            PaymentStatus.REFUNDED,
            Decimal("100.00"),
            Decimal("100.00"),
        )
        assert state.qb_payment_id == "2"  # the payment it refunds is still the last payment


def test_a_partial_refund_keeps_the_status_and_shows_the_amount() -> None:
    invoice = _invoice("1", "100.00", "0.00", "2")
    payment = _payment("2", ("Invoice", "1", "100.00"))
    state = payment_state(
        payment_facts_from_qbo(invoice, [payment], [_refund("3", "30.00", ("Invoice", "1"))]), today=TODAY
    )
    assert (state.payment_status, state.amount_refunded) == (PaymentStatus.PAID, Decimal("30.00"))


def test_a_deleted_refund_receipt_counts_for_nothing() -> None:
    invoice = _invoice("1", "100.00", "0.00", "2")
    payment = _payment("2", ("Invoice", "1", "100.00"))
    deleted = {"Id": "3", "status": "Deleted", "MetaData": {"LastUpdatedTime": "2026-03-10T10:00:00-08:00"}}
    state = payment_state(payment_facts_from_qbo(invoice, [payment], [deleted]), today=TODAY)
    assert (state.payment_status, state.amount_refunded) == (PaymentStatus.PAID, Decimal("0.00"))


def test_a_credit_memo_line_pays_the_payments_invoice_lines_in_order() -> None:
    # 70 of credit pays invoice 1 (50) first, then 20 of invoice 4; the payment's money pays the rest
    payment = _payment(
        "2", ("Invoice", "1", "50.00"), ("Invoice", "4", "80.00"), ("CreditMemo", "9", "70.00")
    )
    first = payment_state(payment_facts_from_qbo(_invoice("1", "50.00", "0.00", "2"), [payment]), today=TODAY)
    second = payment_state(
        payment_facts_from_qbo(_invoice("4", "80.00", "0.00", "2"), [payment]), today=TODAY
    )
    assert (first.payment_status, first.amount_paid, first.amount_credited) == (
        PaymentStatus.PAID,
        Decimal("50.00"),
        Decimal("50.00"),
    )
    assert (second.amount_paid, second.amount_credited) == (Decimal("80.00"), Decimal("20.00"))


def test_an_invoice_settled_by_credit_and_then_refunded_is_refunded() -> None:
    invoice = _invoice("1", "100.00", "0.00", "2")
    payment = _payment("2", ("Invoice", "1", "100.00"), ("CreditMemo", "9", "60.00"))  # 40 of money
    refund = _refund("3", "40.00", ("Payment", "2"))
    state = payment_state(payment_facts_from_qbo(invoice, [payment], [refund]), today=TODAY)
    assert (state.payment_status, state.amount_credited, state.amount_refunded) == (
        PaymentStatus.REFUNDED,
        Decimal("60.00"),
        Decimal("40.00"),
    )


def test_a_refund_naming_several_targets_is_shared_in_link_order() -> None:
    targets = RefundTargets(
        invoices={"1": _invoice("1", "100.00", "0.00"), "4": _invoice("4", "50.00", "10.00")},
        payments={"7": _payment("7", ("Invoice", "5", "25.00"), ("Invoice", "6", "5.00"))},
    )
    refund = _refund("3", "200.00", ("Invoice", "1"), ("Payment", "7"), ("Invoice", "4"), ("Invoice", "404"))
    # invoice 1 takes its 100 paid, payment 7 its 25 and 5, invoice 4 its 40 paid and whatever is left (30)
    assert refund_shares(refund, targets) == {
        "1": Decimal("100.00"),
        "5": Decimal("25.00"),
        "6": Decimal("5.00"),
        "4": Decimal("70.00"),
    }
    assert refund_shares(_refund("8", "10.00"), targets) == {}  # a receipt that names nothing


amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("10000"), places=2)


@SETTINGS
@given(amounts, st.data())
def test_the_local_recomputation_keeps_what_the_pull_derived_from_refunds(
    total: Decimal, data: st.DataObject
) -> None:
    paid = data.draw(st.decimals(min_value=0, max_value=total, places=2))
    credit = data.draw(st.decimals(min_value=0, max_value=paid, places=2))
    refunded = data.draw(st.decimals(min_value=0, max_value=paid + 1, places=2))
    invoice = _invoice("1", str(total), str(total - paid), "2")
    lines = [("Invoice", "1", str(paid))] + ([("CreditMemo", "9", str(credit))] if credit else [])
    refunds = [_refund("3", str(refunded), ("Invoice", "1"))] if refunded else []
    state = payment_state(
        payment_facts_from_qbo(invoice, [_payment("2", *lines)] if paid else [], refunds), today=TODAY
    )
    assert state.amount_credited <= state.amount_paid
    assert state.amount_refunded == refunded
    if state.payment_status is PaymentStatus.REFUNDED:
        assert state.amount_due == 0 and refunded >= paid - credit
    for later in (TODAY, date(2026, 4, 30)):  # nightly, before and after the due date
        again = overdue_status(
            current_status=state.payment_status,
            total_amount=total,
            amount_due=state.amount_due,
            due_date=date(2026, 3, 31),
            today=later,
        )
        if state.payment_status in (PaymentStatus.REFUNDED, PaymentStatus.PAID):
            assert again is state.payment_status
