from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchly_pipelines.rules.payments import (
    AppliedPayment,
    PaymentFacts,
    PaymentState,
    PaymentStatus,
    overdue_status,
    payment_facts_from_qbo,
    payment_state,
    today_in,
)
from batchly_pipelines_tests.support.strategies import SETTINGS, money

DUE = date(2026, 3, 31)
BEFORE_DUE, ON_DUE, AFTER_DUE = DUE - timedelta(days=1), DUE, DUE + timedelta(days=1)
P1 = AppliedPayment("101", date(2026, 3, 5), Decimal("40.00"))
P2 = AppliedPayment("102", date(2026, 3, 20), Decimal("60.00"))


def facts(
    balance: str, *payments: AppliedPayment, total: str = "100.00", voided: bool = False
) -> PaymentFacts:
    return PaymentFacts(Decimal(total), Decimal(balance), DUE, voided, payments)


@pytest.mark.parametrize(
    ("invoice", "today", "expected"),
    [
        (facts("100.00"), BEFORE_DUE, PaymentStatus.UNPAID),
        (facts("100.00"), ON_DUE, PaymentStatus.UNPAID),
        (facts("100.00"), AFTER_DUE, PaymentStatus.OVERDUE),
        (facts("60.00", P1), BEFORE_DUE, PaymentStatus.PARTIAL),
        (facts("60.00", P1), AFTER_DUE, PaymentStatus.OVERDUE),
        (facts("0.00", P1, P2), AFTER_DUE, PaymentStatus.PAID),
        (facts("0.00", total="0.00"), AFTER_DUE, PaymentStatus.UNPAID),
        (facts("0.00", P1, total="0.00", voided=True), AFTER_DUE, PaymentStatus.VOIDED),
    ],
)
def test_status(invoice: PaymentFacts, today: date, expected: PaymentStatus) -> None:
    assert payment_state(invoice, today=today).payment_status is expected


def test_fully_paid_invoice_reports_the_last_payment() -> None:
    state = payment_state(facts("0.00", P2, P1), today=BEFORE_DUE)
    assert state == PaymentState(Decimal("100.00"), Decimal("0.00"), PaymentStatus.PAID, P2.txn_date, "102")
    assert state.as_columns() == {
        "amount_paid": Decimal("100.00"),
        "amount_due": Decimal("0.00"),
        "amount_credited": Decimal("0.00"),
        "amount_refunded": Decimal("0.00"),
        "payment_status": "paid",
        "payment_date": date(2026, 3, 20),
        "qb_payment_id": "102",
    }


def test_payments_on_the_same_day_order_by_numeric_id() -> None:
    same_day = [AppliedPayment(pid, date(2026, 3, 5), Decimal("10.00")) for pid in ("99", "100", "98")]
    assert payment_state(facts("70.00", *same_day), today=BEFORE_DUE).qb_payment_id == "100"


def test_deleting_a_payment_reverts_paid_to_partial() -> None:
    paid = payment_state(facts("0.00", P1, P2), today=BEFORE_DUE)
    after_delete = payment_state(facts("60.00", P1), today=BEFORE_DUE)
    assert paid.payment_status is PaymentStatus.PAID
    assert after_delete == PaymentState(
        Decimal("40.00"), Decimal("60.00"), PaymentStatus.PARTIAL, P1.txn_date, "101"
    )


def test_a_refund_that_raises_the_balance_back_reverts_to_unpaid_and_forgets_the_payment() -> None:
    refunded = payment_state(facts("100.00", P1, P2), today=AFTER_DUE)
    assert refunded == PaymentState(Decimal("0.00"), Decimal("100.00"), PaymentStatus.OVERDUE, None, None)


def test_voided_invoice_owes_and_paid_nothing() -> None:
    state = payment_state(facts("0.00", total="0.00", voided=True), today=AFTER_DUE)
    assert state == PaymentState(Decimal("0.00"), Decimal("0.00"), PaymentStatus.VOIDED, None, None)


def test_nightly_recomputation_turns_unpaid_into_overdue_without_quickbooks() -> None:
    def nightly(status: str, amount_due: str, today: date) -> PaymentStatus:
        return overdue_status(
            current_status=status,
            total_amount=Decimal("100"),
            amount_due=Decimal(amount_due),
            due_date=DUE,
            today=today,
        )

    assert nightly("unpaid", "100", ON_DUE) is PaymentStatus.UNPAID
    assert nightly("unpaid", "100", AFTER_DUE) is PaymentStatus.OVERDUE
    assert nightly("partial", "50", AFTER_DUE) is PaymentStatus.OVERDUE
    assert nightly("overdue", "50", BEFORE_DUE) is PaymentStatus.PARTIAL  # due date moved later
    assert nightly("paid", "0", AFTER_DUE) is PaymentStatus.PAID
    assert nightly("voided", "0", AFTER_DUE) is PaymentStatus.VOIDED


@SETTINGS
@given(money, st.data(), st.dates(min_value=date(2026, 1, 1), max_value=date(2026, 12, 31)), st.booleans())
def test_local_recomputation_agrees_with_the_pull(
    total: Decimal, data: st.DataObject, today: date, with_payment: bool
) -> None:
    balance = data.draw(st.decimals(min_value=0, max_value=total, places=2))
    payments = (AppliedPayment("1", date(2026, 1, 1), total - balance),) if with_payment else ()
    state = payment_state(PaymentFacts(total, balance, DUE, False, payments), today=today)
    assert state.amount_paid + state.amount_due == total
    assert state.amount_due == balance
    recomputed = overdue_status(
        current_status=state.payment_status,
        total_amount=total,
        amount_due=state.amount_due,
        due_date=DUE,
        today=today,
    )
    assert recomputed is state.payment_status
    if state.payment_status is PaymentStatus.OVERDUE:
        assert today > DUE and balance > 0
    if state.payment_date is not None:
        assert state.amount_paid > 0


QBO_INVOICE = {"Id": "130", "TotalAmt": 100.0, "Balance": 25.0, "DueDate": "2026-03-31", "PrivateNote": None}
QBO_PAYMENTS: list[dict[str, Any]] = [
    {
        "Id": "201",
        "TxnDate": "2026-03-02",
        "Line": [
            {"Amount": 50.0, "LinkedTxn": [{"TxnId": "130", "TxnType": "Invoice"}]},
            {"Amount": 10.0, "LinkedTxn": [{"TxnId": "999", "TxnType": "Invoice"}]},
        ],
    },
    {
        "Id": "202",
        "TxnDate": "2026-03-09",
        "Line": [
            {"Amount": 20.0, "LinkedTxn": [{"TxnId": "130", "TxnType": "Invoice"}]},
            {"Amount": 5.0, "LinkedTxn": [{"TxnId": "130", "TxnType": "Invoice"}]},
        ],
    },
    {"Id": "203", "status": "Deleted", "MetaData": {"LastUpdatedTime": "2026-03-10T10:00:00-08:00"}},
]


def test_facts_from_qbo_sum_lines_applied_to_this_invoice_and_skip_deleted_payments() -> None:
    parsed = payment_facts_from_qbo(QBO_INVOICE, QBO_PAYMENTS)
    assert parsed == PaymentFacts(
        Decimal("100.00"),
        Decimal("25.00"),
        date(2026, 3, 31),
        False,
        (
            AppliedPayment("201", date(2026, 3, 2), Decimal("50.00")),
            AppliedPayment("202", date(2026, 3, 9), Decimal("25.00")),
        ),
    )
    state = payment_state(parsed, today=date(2026, 3, 15))
    assert (state.payment_status, state.qb_payment_id) == (PaymentStatus.PARTIAL, "202")


def test_facts_from_qbo_recognise_a_voided_invoice() -> None:
    voided = QBO_INVOICE | {"TotalAmt": 0, "Balance": 0, "PrivateNote": "Voided - wrong customer"}
    assert payment_facts_from_qbo(voided, []).voided
    assert not payment_facts_from_qbo(QBO_INVOICE | {"PrivateNote": "Voided earlier?"}, []).voided


def test_a_voided_payment_with_zero_amounts_is_not_the_last_payment() -> None:
    voided_payment = {"Id": "204", "TxnDate": "2026-03-12", "Line": []}
    parsed = payment_facts_from_qbo(QBO_INVOICE, [*QBO_PAYMENTS, voided_payment])
    assert payment_state(parsed, today=date(2026, 3, 15)).qb_payment_id == "202"


@pytest.mark.parametrize(
    ("tz_name", "expected"),
    [
        ("America/Los_Angeles", date(2025, 12, 31)),
        ("Europe/Berlin", date(2026, 1, 1)),
        ("UTC", date(2026, 1, 1)),
    ],
)
def test_today_in_the_organisation_time_zone(tz_name: str, expected: date) -> None:
    assert today_in(tz_name, datetime(2026, 1, 1, 3, 0, tzinfo=UTC)) == expected


def test_today_in_refuses_naive_now() -> None:
    with pytest.raises(ValueError):
        today_in("UTC", datetime(2026, 1, 1))
