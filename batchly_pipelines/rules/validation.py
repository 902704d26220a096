"""Checks made before anything is sent to QuickBooks; every issue names the record and the field."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from batchly_pipelines.rules.mapping import (
    CUSTOMER_MAPPING,
    ITEM_MAPPING,
    invoice_doc_number,
    to_decimal,
    to_money,
)

PUSHABLE_ENTITIES = frozenset({"customer", "item", "invoice"})
ITEM_TYPES = frozenset({"Service", "NonInventory", "Inventory"})
# QuickBooks' length limits per synced column (Intuit's entity reference); SQLite does not enforce VARCHAR sizes
CUSTOMER_MAX_LENGTHS = {
    "display_name": 500, "given_name": 100, "family_name": 100, "company_name": 100, "email": 100, "phone": 30,
    "bill_line1": 500, "bill_city": 255, "bill_region": 255, "bill_postal_code": 30, "bill_country": 255,
    "notes": 2000,
}  # fmt: skip
ITEM_MAX_LENGTHS = {"name": 100, "sku": 100, "description": 4000}
LINE_DESCRIPTION_MAX = 4000
DOC_NUMBER_MAX = 21
_FORBIDDEN_IN_DISPLAY_NAME = re.compile(r"[:\t\r\n]")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_STATUS_MESSAGES = {
    "draft": "draft invoices are not pushed",
    "void": "a void invoice is voided in QuickBooks if it was pushed, never created",
}
IMMUTABLE_MESSAGE = "invoice already in QuickBooks cannot be edited; corrections are void + re-create"


@dataclass(frozen=True)
class ValidationIssue:
    """Why a record cannot be pushed."""

    entity: str
    record_id: Any
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.entity} {self.record_id} {self.field}: {self.message}"


class NotPushableError(ValueError):
    """Raised when something other than a customer, item or invoice is about to be sent to QuickBooks."""


def assert_pushable(entity: str) -> None:
    """Raise :class:`NotPushableError` unless ``entity`` may be sent to QuickBooks (sales orders never)."""
    if entity not in PUSHABLE_ENTITIES:
        raise NotPushableError(f"{entity!r} is never sent to QuickBooks")


class _Issues:
    """Collects issues about one record."""

    def __init__(self, entity: str, record_id: Any) -> None:
        self.entity, self.record_id = entity, record_id
        self.found: list[ValidationIssue] = []

    def add(self, field: str, message: str) -> None:
        self.found.append(ValidationIssue(self.entity, self.record_id, field, message))

    def max_length(self, fields: Mapping[str, Any], field: str, limit: int) -> None:
        value = fields.get(field)
        if value is not None and len(value) > limit:
            self.add(field, f"longer than {limit} characters ({len(value)})")


def validate_customer(row: Mapping[str, Any]) -> list[ValidationIssue]:
    """Issues that would make QuickBooks refuse this Batchly customer."""
    fields = CUSTOMER_MAPPING.from_row(row)
    issues = _Issues("customer", row.get("id"))
    display_name = fields["display_name"]
    if display_name is None:
        if fields["given_name"] is None and fields["family_name"] is None:
            issues.add("display_name", "required (or a given or family name)")
    elif _FORBIDDEN_IN_DISPLAY_NAME.search(display_name):
        issues.add("display_name", "must not contain ':', a tab or a line break")
    for field, limit in CUSTOMER_MAX_LENGTHS.items():
        issues.max_length(fields, field, limit)
    if fields["email"] is not None and not _EMAIL.match(fields["email"]):
        issues.add("email", f"not an e-mail address: {fields['email']!r}")
    return issues.found


def validate_item(row: Mapping[str, Any]) -> list[ValidationIssue]:
    """Issues that would make QuickBooks refuse this Batchly item."""
    fields = ITEM_MAPPING.from_row(row)
    issues = _Issues("item", row.get("id"))
    if fields["name"] is None:
        issues.add("name", "required")
    for field, limit in ITEM_MAX_LENGTHS.items():
        issues.max_length(fields, field, limit)
    if fields["unit_price"] is not None and fields["unit_price"] < 0:
        issues.add("unit_price", f"must not be negative ({fields['unit_price']})")
    if fields["item_type"] not in ITEM_TYPES:
        issues.add(
            "item_type", f"must be one of {', '.join(sorted(ITEM_TYPES))} (got {fields['item_type']!r})"
        )
    elif fields["item_type"] == "Inventory" and row.get("qbo_id") is None:
        issues.add(
            "item_type",
            "Inventory items need stock accounts and quantities: create them in QuickBooks (the pull brings them "
            "to Batchly)",
        )
    return issues.found


def validate_invoice(
    invoice: Mapping[str, Any],
    lines: Iterable[Mapping[str, Any]],
    *,
    customer: Mapping[str, Any] | None,
    items: Mapping[Any, Mapping[str, Any]],
    pushed_fingerprint: str | None = None,
) -> list[ValidationIssue]:
    """Issues that forbid creating this invoice in QuickBooks.

    ``customer`` is the invoice's customer row (``None`` if unknown), ``items`` the rows of the items its
    lines reference, by id. An invoice that already has a ``qbo_id`` is immutable: it passes only while its
    :func:`invoice_fingerprint` still equals ``pushed_fingerprint``, the one recorded when it was pushed.
    """
    lines = sorted(lines, key=lambda line: line["line_no"])
    issues = _Issues("invoice", invoice.get("id"))
    status = str(invoice.get("status"))
    if status != "open":
        issues.add("status", _STATUS_MESSAGES.get(status, f"unknown invoice status {status!r}"))
    if invoice.get("qbo_id") is not None and invoice_fingerprint(invoice, lines) != pushed_fingerprint:
        issues.add("qbo_id", IMMUTABLE_MESSAGE)
    doc_number = invoice_doc_number(invoice)
    if doc_number is None:
        issues.add(
            "doc_number",
            "required (blank or only spaces): QuickBooks would number the invoice itself, so a retry could not "
            "find it and would create it twice",
        )
    elif len(doc_number) > DOC_NUMBER_MAX:
        issues.add("doc_number", f"longer than {DOC_NUMBER_MAX} characters ({len(doc_number)})")
    _check_reference(issues, "customer_id", invoice.get("customer_id"), customer, validate_customer)
    if not lines:
        issues.add("lines", "an invoice needs at least one line")
    for line in lines:
        _check_line(issues, line, items)
    amounts = [amount for line in lines if (amount := to_money(line.get("amount"))) is not None]
    if len(amounts) == len(lines):
        total, line_sum = to_money(invoice.get("total_amount")), sum(amounts, Decimal("0.00"))
        if total != line_sum:
            issues.add("total_amount", f"{total} is not the sum of the line amounts ({line_sum})")
    return issues.found


def validate_pushed_invoice(
    invoice: Mapping[str, Any], lines: Iterable[Mapping[str, Any]], base: Mapping[str, Any], *, voided: bool
) -> list[ValidationIssue]:
    """Edits of an invoice already in QuickBooks that the push refuses (it sends nothing for them).

    ``base`` is what was recorded when it was pushed (its :func:`invoice_fingerprint`, and ``replaces_invoice_id``
    since bases record it); ``voided`` whether it has been voided in QuickBooks. A void invoice is checked by
    nobody: voiding is always allowed.
    """
    issues = _Issues("invoice", invoice.get("id"))
    status, qbo_id = invoice.get("status"), invoice.get("qbo_id")
    if voided:
        if status == "open":
            issues.add(
                "status", f"voided in QuickBooks (Id {qbo_id}), so it cannot be reopened; issue a new invoice"
            )
        return issues.found
    if status == "draft":
        issues.add(
            "status",
            f"already in QuickBooks (Id {qbo_id}), so it cannot go back to draft; it stays open in QuickBooks. "
            "Void it (status void) or correct it (a new invoice with replaces_invoice_id), or set it back to open",
        )
    if "replaces_invoice_id" in base and base["replaces_invoice_id"] != invoice.get("replaces_invoice_id"):
        was, now = base["replaces_invoice_id"], invoice.get("replaces_invoice_id")
        advice = (
            f"; to correct invoice {now}, issue a new invoice that replaces it" if now is not None else ""
        )
        issues.add(
            "replaces_invoice_id",
            f"already in QuickBooks, so it cannot start or stop correcting another invoice (was {was}, now {now}): "
            f"nothing was voided{advice}",
        )
    if invoice_fingerprint(invoice, lines) != base.get("fingerprint"):
        issues.add("qbo_id", IMMUTABLE_MESSAGE)
    return issues.found


def _check_line(issues: _Issues, line: Mapping[str, Any], items: Mapping[Any, Mapping[str, Any]]) -> None:
    prefix = f"lines[{line['line_no']}]"
    item_id = line.get("item_id")
    _check_reference(issues, f"{prefix}.item_id", item_id, items.get(item_id), validate_item)
    description = line.get("description")
    if description is not None and len(description) > LINE_DESCRIPTION_MAX:
        issues.add(
            f"{prefix}.description", f"longer than {LINE_DESCRIPTION_MAX} characters ({len(description)})"
        )
    quantity, unit_price, amount = (_number(line.get(name)) for name in ("quantity", "unit_price", "amount"))
    if quantity is None or quantity <= 0:
        issues.add(f"{prefix}.quantity", f"must be greater than zero (got {quantity})")
    if unit_price is None or unit_price < 0:
        issues.add(f"{prefix}.unit_price", f"must be zero or more (got {unit_price})")
    if quantity is not None and unit_price is not None:
        expected = to_money(quantity * unit_price)
        if amount != expected:
            issues.add(f"{prefix}.amount", f"{amount} is not quantity * unit_price ({expected})")


def _check_reference(
    issues: _Issues,
    field: str,
    ref_id: Any,
    row: Mapping[str, Any] | None,
    validate: Callable[[Mapping[str, Any]], list[ValidationIssue]],
) -> None:
    if ref_id is None:
        issues.add(field, "required")
    elif row is None:
        issues.add(field, f"unknown record {ref_id!r}")
    elif row.get("is_active") is False:
        issues.add(field, f"{ref_id!r} is inactive")
    elif row.get("qbo_id") is None:
        problems = validate(row)
        if problems:
            issues.add(field, f"{ref_id!r} cannot be pushed: {problems[0]}")


def _number(value: object) -> Decimal | None:
    return None if value is None else to_decimal(value)


def invoice_fingerprint(invoice: Mapping[str, Any], lines: Iterable[Mapping[str, Any]]) -> str:
    """A digest of what an invoice sends to QuickBooks; store it at push time to detect later edits."""
    content = {
        "customer_id": invoice.get("customer_id"),
        "doc_number": invoice.get("doc_number"),
        "txn_date": invoice.get("txn_date"),
        "due_date": invoice.get("due_date"),
        "total_amount": to_money(invoice.get("total_amount")),
        "lines": [
            [
                line["line_no"],
                line.get("item_id"),
                line.get("description"),
                *(_number(line.get(name)) for name in ("quantity", "unit_price")),
                to_money(line.get("amount")),
            ]
            for line in sorted(lines, key=lambda line: line["line_no"])
        ],
    }
    canonical = json.dumps(content, sort_keys=True, default=_canonical)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _canonical(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value.normalize())
    return str(value)
