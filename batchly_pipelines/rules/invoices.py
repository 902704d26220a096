"""QuickBooks invoices as the push meets them: DocNumber identity, voided copies, applied payments."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from batchly_pipelines.rules.mapping import to_money

ZERO = Decimal("0.00")


def doc_number_key(doc_number: str) -> str:
    """A DocNumber as QuickBooks compares it: trimmed, without letter case (``INV-7`` and ``inv-7`` are one)."""
    return doc_number.strip().casefold()


def is_voided(invoice: Mapping[str, Any]) -> bool:
    """A QuickBooks invoice that was voided: its amounts zeroed and ``Voided`` prepended to its PrivateNote."""
    total = to_money(invoice.get("TotalAmt"))
    return (total is None or total == ZERO) and str(invoice.get("PrivateNote") or "").startswith("Voided")


def applied_payments(invoice: Mapping[str, Any]) -> Decimal | None:
    """How much payments (and credits applied through them) settled of a QuickBooks invoice, ``None`` when none
    did. QuickBooks cannot void such an invoice (6000), and a sync must not try: the payment would be stranded."""
    total = to_money(invoice.get("TotalAmt")) or ZERO
    balance = to_money(invoice.get("Balance"))
    paid = total - balance if balance is not None else ZERO
    linked = any(link.get("TxnType") == "Payment" for link in invoice.get("LinkedTxn") or [])
    return paid if paid != ZERO or linked else None


def describe_payments(invoice: Mapping[str, Any]) -> str:
    """``10.00 of 40.40 paid``: what :func:`applied_payments` found, for a message."""
    return f"{applied_payments(invoice) or ZERO} of {to_money(invoice.get('TotalAmt')) or ZERO} paid"
