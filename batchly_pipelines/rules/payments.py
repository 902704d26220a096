"""Payment status of an invoice, derived from what QuickBooks says now.

QuickBooks is the truth: ``Balance`` is what is still owed after every live payment and credit, so a payment
that is deleted or voided, or a refund that raises the balance back, reverts the status on the next pull
without any history. ``amount_paid`` is ``TotalAmt - Balance``; the last payment is the latest live payment
that applies a non-zero amount to the invoice, reported only while something is paid. "Overdue" depends on
the date in the organisation's time zone and is recomputed locally every day (:func:`overdue_status`).

Credits and refunds, which settle ``Balance`` without money or leave it alone:

- a payment line that applies a credit memo (``TxnType: "CreditMemo"``) pays the payment's invoice lines with credit
  instead of money; the credit goes to the payment's invoice lines in their order, each taking at most its own
  amount. ``amount_credited`` is the part of ``amount_paid`` settled that way;
- a refund receipt pays money back. QuickBooks does not tie one to an invoice by itself: a receipt counts for what
  its ``LinkedTxn`` names — an ``Invoice``, or a ``Payment`` for the invoices that payment paid — in link order, each
  taking at most what was paid on it, the last one reached whatever is left (:func:`refund_shares`).
  ``amount_refunded`` is the invoice's share of its live refund receipts;
- an invoice whose money was all paid back (refunded ≥ paid - credited) with nothing left due is ``refunded``; a
  partial refund keeps the status the balance gives and shows in ``amount_refunded``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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
    REFUNDED = "refunded"


@dataclass(frozen=True)
class AppliedPayment:
    """The part of one live QuickBooks payment applied to the invoice (``credit`` of it paid by credit memos)."""

    payment_id: str
    txn_date: date
    amount: Decimal
    credit: Decimal = ZERO


@dataclass(frozen=True)
class AppliedRefund:
    """The share of one live QuickBooks refund receipt paid back on the invoice."""

    refund_id: str
    txn_date: date
    amount: Decimal


@dataclass(frozen=True)
class RefundTargets:
    """The QuickBooks invoices and payments refund receipts name, by id (what :func:`refund_shares` needs to share
    a receipt among them)."""

    invoices: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    payments: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class PaymentFacts:
    """The current QuickBooks state of an invoice and the live payments applied to it."""

    total_amt: Decimal
    balance: Decimal
    due_date: date | None
    voided: bool = False
    payments: tuple[AppliedPayment, ...] = ()
    refunds: tuple[AppliedRefund, ...] = ()


@dataclass(frozen=True)
class PaymentState:
    """The payment columns of a Batchly invoice."""

    amount_paid: Decimal
    amount_due: Decimal
    payment_status: PaymentStatus
    payment_date: date | None
    qb_payment_id: str | None
    amount_credited: Decimal = ZERO
    amount_refunded: Decimal = ZERO

    def as_columns(self) -> dict[str, Any]:
        """The values keyed by ``invoices`` column name (status as its string)."""
        return {
            "amount_paid": self.amount_paid,
            "amount_due": self.amount_due,
            "amount_credited": self.amount_credited,
            "amount_refunded": self.amount_refunded,
            "payment_status": self.payment_status.value,
            "payment_date": self.payment_date,
            "qb_payment_id": self.qb_payment_id,
        }


def payment_status(
    *,
    total: Decimal,
    amount_due: Decimal,
    due_date: date | None,
    today: date,
    voided: bool = False,
    refunded: bool = False,
) -> PaymentStatus:
    """voided; refunded (its money all paid back, nothing due); paid (nothing due on a non-zero invoice); partial;
    unpaid — overdue when something is due and ``due_date`` is before ``today``."""
    if voided:
        return PaymentStatus.VOIDED
    if refunded and amount_due <= 0:
        return PaymentStatus.REFUNDED
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
    credited = min(sum((p.credit for p in facts.payments), ZERO), amount_paid)
    refunded = sum((r.amount for r in facts.refunds), ZERO)
    status = payment_status(
        total=total,
        amount_due=amount_due,
        due_date=facts.due_date,
        today=today,
        refunded=refunded > 0 and refunded >= amount_paid - credited,
    )
    live = [p for p in facts.payments if p.amount != 0]
    if amount_paid == 0 or not live:
        return PaymentState(amount_paid, amount_due, status, None, None, credited, refunded)
    last = max(live, key=lambda p: (p.txn_date, _id_order(p.payment_id)))
    return PaymentState(amount_paid, amount_due, status, last.txn_date, last.payment_id, credited, refunded)


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
        refunded=current_status == PaymentStatus.REFUNDED,
    )


def today_in(tz_name: str, now_utc: datetime) -> date:
    """The calendar date at ``now_utc`` in the IANA time zone ``tz_name``."""
    if now_utc.tzinfo is None:
        raise ValueError("now_utc must be timezone-aware")
    return now_utc.astimezone(ZoneInfo(tz_name)).date()


def payment_facts_from_qbo(
    invoice: Mapping[str, Any],
    payments: Iterable[Mapping[str, Any]],
    refunds: Iterable[Mapping[str, Any]] = (),
    targets: RefundTargets | None = None,
) -> PaymentFacts:
    """Facts from a QuickBooks ``Invoice``, the ``Payment`` objects linked to it and the ``RefundReceipt`` objects
    that name it or one of its payments (deleted ones skipped). ``targets`` holds the other invoices and payments
    those receipts name (the invoice and its payments are added to it).

    A void keeps the invoice with zero amounts and ``Voided`` prepended to ``PrivateNote``.
    """
    invoice_id = str(invoice["Id"])
    total = _money(invoice.get("TotalAmt", 0))
    voided = total == 0 and str(invoice.get("PrivateNote") or "").startswith("Voided")
    due_date = invoice.get("DueDate")
    live = [payment for payment in payments if payment.get("status") != "Deleted"]
    applied: list[AppliedPayment] = []
    for payment in live:
        amount, credit = _applied_to(payment, invoice_id)
        applied.append(
            AppliedPayment(str(payment["Id"]), date.fromisoformat(payment["TxnDate"]), amount, credit)
        )
    known = targets or RefundTargets()
    named = RefundTargets(
        {**known.invoices, invoice_id: invoice},
        {**known.payments, **{str(payment["Id"]): payment for payment in live}},
    )
    shares = []
    for refund in refunds:
        if refund.get("status") == "Deleted":
            continue
        share = refund_shares(refund, named).get(invoice_id, ZERO)
        if share:
            shares.append(AppliedRefund(str(refund["Id"]), date.fromisoformat(refund["TxnDate"]), share))
    return PaymentFacts(
        total_amt=total,
        balance=_money(invoice.get("Balance", 0)),
        due_date=date.fromisoformat(due_date) if due_date else None,
        voided=voided,
        payments=tuple(applied),
        refunds=tuple(shares),
    )


def refund_targets(refund: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(TxnType, TxnId)`` of the invoices and payments a refund receipt names, in link order."""
    return [
        (str(link["TxnType"]), str(link["TxnId"]))
        for link in refund.get("LinkedTxn") or []
        if link.get("TxnType") in ("Invoice", "Payment")
    ]


def refund_shares(refund: Mapping[str, Any], targets: RefundTargets) -> dict[str, Decimal]:
    """Invoice id → the part of a refund receipt's ``TotalAmt`` paid back on it.

    The receipt's targets are taken in link order: an invoice it names can take what was paid on it
    (``TotalAmt - Balance``), a payment it names the amount it applied to each of its invoices; the last invoice
    reached takes whatever is left. Targets absent from ``targets`` are passed over."""
    left = _money(refund.get("TotalAmt", 0))
    candidates: list[tuple[str, Decimal]] = []
    for txn_type, txn_id in refund_targets(refund):
        if txn_type == "Invoice" and txn_id in targets.invoices:
            invoice = targets.invoices[txn_id]
            paid = _money(invoice.get("TotalAmt", 0)) - max(_money(invoice.get("Balance", 0)), ZERO)
            candidates.append((txn_id, paid))
        elif txn_type == "Payment" and txn_id in targets.payments:
            candidates += _invoice_lines(targets.payments[txn_id])
    shares: dict[str, Decimal] = {}
    for invoice_id, cap in candidates:
        take = min(left, max(cap, ZERO))
        shares[invoice_id] = shares.get(invoice_id, ZERO) + take
        left -= take
    if candidates and left > 0:
        shares[candidates[-1][0]] += left
    return {invoice_id: amount for invoice_id, amount in shares.items() if amount}


def _invoice_lines(payment: Mapping[str, Any]) -> list[tuple[str, Decimal]]:
    """``(invoice id, amount)`` of each invoice a payment's lines apply to, in line order."""
    return [
        (str(link["TxnId"]), _money(line.get("Amount", 0)))
        for line in payment.get("Line") or []
        for link in line.get("LinkedTxn") or []
        if link.get("TxnType") == "Invoice"
    ]


def _applied_to(payment: Mapping[str, Any], invoice_id: str) -> tuple[Decimal, Decimal]:
    """What a payment applies to one invoice, and how much of it its credit memo lines pay (the payment's credit
    goes to its invoice lines in order, each taking at most its own amount)."""
    credit_left = sum(
        (
            _money(line.get("Amount", 0))
            for line in payment.get("Line") or []
            if any(link.get("TxnType") == "CreditMemo" for link in line.get("LinkedTxn") or [])
        ),
        ZERO,
    )
    amount = credit = ZERO
    for line_invoice, line_amount in _invoice_lines(payment):
        taken = min(credit_left, line_amount)
        credit_left -= taken
        if line_invoice == invoice_id:
            amount += line_amount
            credit += taken
    return amount, credit


def _money(value: object) -> Decimal:
    amount = to_money(value)
    if amount is None:
        raise ValueError("amount missing")
    return amount


def _id_order(qbo_id: str) -> tuple[int, str]:
    return len(qbo_id), qbo_id
