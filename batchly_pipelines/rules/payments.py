"""Payment status of an invoice, derived from what QuickBooks says now.

QuickBooks is the truth: ``Balance`` is what is still owed after every live payment and credit, so a payment
that is deleted or voided, or a refund that raises the balance back, reverts the status on the next pull
without any history. ``amount_paid`` is ``TotalAmt - Balance``; the last payment is the latest live payment
that applies a non-zero amount to the invoice, reported only while something is paid. "Overdue" depends on
the date in the organisation's time zone and is recomputed locally every day (:func:`overdue_status`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from batchly_pipelines.rules.mapping import to_money

ZERO = Decimal("0.00")


class PaymentStatus(StrEnum):
    """Batchly's ``invoices.payment_status``."""

    UNPAID = "unpaid"
    PARTIAL = "partial"
    PAID = "paid"
    OVERDUE = "overdue"
    VOIDED = "voided"


@dataclass(frozen=True)
class AppliedPayment:
    """The part of one live QuickBooks payment applied to the invoice."""

    payment_id: str
    txn_date: date
    amount: Decimal


@dataclass(frozen=True)
class PaymentFacts:
    """The current QuickBooks state of an invoice and the live payments applied to it."""

    total_amt: Decimal
    balance: Decimal
    due_date: date | None
    voided: bool = False
    payments: tuple[AppliedPayment, ...] = ()


@dataclass(frozen=True)
class PaymentState:
    """The payment columns of a Batchly invoice."""

    amount_paid: Decimal
    amount_due: Decimal
    payment_status: PaymentStatus
    payment_date: date | None
    qb_payment_id: str | None

    def as_columns(self) -> dict[str, Any]:
        """The values keyed by ``invoices`` column name (status as its string)."""
        return {
            "amount_paid": self.amount_paid,
            "amount_due": self.amount_due,
            "payment_status": self.payment_status.value,
            "payment_date": self.payment_date,
            "qb_payment_id": self.qb_payment_id,
        }


def payment_status(
    *, total: Decimal, amount_due: Decimal, due_date: date | None, today: date, voided: bool = False
) -> PaymentStatus:
    """voided; paid (nothing due on a non-zero invoice); partial; unpaid — overdue when something is due
    and ``due_date`` is before ``today``."""
    if voided:
        return PaymentStatus.VOIDED
    if total > 0 and amount_due <= 0:
        return PaymentStatus.PAID
    if amount_due > 0 and due_date is not None and due_date < today:
        return PaymentStatus.OVERDUE
    if 0 < amount_due < total:
        return PaymentStatus.PARTIAL
    return PaymentStatus.UNPAID


def payment_state(facts: PaymentFacts, *, today: date) -> PaymentState:
    """The Batchly payment columns for an invoice, given QuickBooks facts and today's date for the org."""
    if facts.voided:
        return PaymentState(ZERO, ZERO, PaymentStatus.VOIDED, None, None)
    total, balance = _money(facts.total_amt), _money(facts.balance)
    amount_due = max(balance, ZERO)
    amount_paid = max(total - amount_due, ZERO)
    status = payment_status(total=total, amount_due=amount_due, due_date=facts.due_date, today=today)
    live = [p for p in facts.payments if p.amount != 0]
    if amount_paid == 0 or not live:
        return PaymentState(amount_paid, amount_due, status, None, None)
    last = max(live, key=lambda p: (p.txn_date, _id_order(p.payment_id)))
    return PaymentState(amount_paid, amount_due, status, last.txn_date, last.payment_id)


def overdue_status(
    *, current_status: str, total_amount: Decimal, amount_due: Decimal, due_date: date | None, today: date
) -> PaymentStatus:
    """Re-derive the status of a Batchly invoice for ``today`` from its own columns (no QuickBooks data)."""
    return payment_status(
        total=total_amount,
        amount_due=amount_due,
        due_date=due_date,
        today=today,
        voided=current_status == PaymentStatus.VOIDED,
    )


def today_in(tz_name: str, now_utc: datetime) -> date:
    """The calendar date at ``now_utc`` in the IANA time zone ``tz_name``."""
    if now_utc.tzinfo is None:
        raise ValueError("now_utc must be timezone-aware")
    return now_utc.astimezone(ZoneInfo(tz_name)).date()


def payment_facts_from_qbo(invoice: Mapping[str, Any], payments: Iterable[Mapping[str, Any]]) -> PaymentFacts:
    """Facts from a QuickBooks ``Invoice`` and the ``Payment`` objects linked to it (deleted ones skipped).

    A void keeps the invoice with zero amounts and ``Voided`` prepended to ``PrivateNote``.
    """
    invoice_id = str(invoice["Id"])
    total = _money(invoice.get("TotalAmt", 0))
    voided = total == 0 and str(invoice.get("PrivateNote") or "").startswith("Voided")
    due_date = invoice.get("DueDate")
    applied: list[AppliedPayment] = []
    for payment in payments:
        if payment.get("status") == "Deleted":
            continue
        amount = sum(
            (
                _money(line.get("Amount", 0))
                for line in payment.get("Line", [])
                if _applies_to(line, invoice_id)
            ),
            ZERO,
        )
        applied.append(AppliedPayment(str(payment["Id"]), date.fromisoformat(payment["TxnDate"]), amount))
    return PaymentFacts(
        total_amt=total,
        balance=_money(invoice.get("Balance", 0)),
        due_date=date.fromisoformat(due_date) if due_date else None,
        voided=voided,
        payments=tuple(applied),
    )


def _applies_to(line: Mapping[str, Any], invoice_id: str) -> bool:
    return any(
        link.get("TxnType") == "Invoice" and str(link.get("TxnId")) == invoice_id
        for link in line.get("LinkedTxn", [])
    )


def _money(value: object) -> Decimal:
    amount = to_money(value)
    if amount is None:
        raise ValueError("amount missing")
    return amount


def _id_order(qbo_id: str) -> tuple[int, str]:
    return len(qbo_id), qbo_id
