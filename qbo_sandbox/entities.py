"""Per-entity rules: writable and read-only fields, required fields, references, defaults and derived amounts.

``build`` turns the writable fields of a create or update into the stored body (everything except Id, SyncToken,
MetaData and the ledger-maintained fields, see :mod:`qbo_sandbox.ledger`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Protocol

from qbo_sandbox.wire import (
    business,
    invalid,
    not_found,
    out_of_range,
    required,
    too_long,
    unsupported,
    validation,
)

CENT = Decimal("0.01")
MAX_MAGNITUDE = Decimal("1e12")  # amounts, quantities and prices beyond ±1e12 are refused (2050)
USD = {"value": "USD", "name": "United States Dollar"}
SYSTEM_FIELDS = frozenset({"Id", "SyncToken", "MetaData", "domain", "sparse"})
# Intuit reads a date sent as "" as no date at all (python-quickbooks sends "TxnDate": "" and "DueDate": "" for unset
# dates); elsewhere "" is a value
DATE_FIELDS = frozenset({"TxnDate", "DueDate", "ShipDate", "InvStartDate"})


class Lookup(Protocol):
    """What entity rules may ask of the company: visible objects by id, and today's company-local date."""

    def visible(self, entity: str, obj_id: str) -> dict[str, Any] | None: ...

    def today(self) -> date: ...


Builder = Callable[[Lookup, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class EntitySpec:
    """How one QBO entity behaves."""

    name: str
    kind: str  # "name" (name list: no delete, active-only queries), "transaction", "info" (read-only)
    writable: frozenset[str]
    read_only: frozenset[str]
    build: Builder
    unique_field: str | None = None

    @property
    def fields(self) -> frozenset[str]:
        """Every property a query may name."""
        return self.writable | self.read_only | SYSTEM_FIELDS

    def writable_fields(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The writable, non-null fields of a payload; read-only and unknown properties are ignored, and so are
        dates sent as empty strings."""
        return {
            key: value
            for key, value in payload.items()
            if key in self.writable and value is not None and not (key in DATE_FIELDS and _blank(value))
        }


def _blank(value: Any) -> bool:
    return isinstance(value, str) and not value.strip()


def money(value: Any, element: str) -> Decimal:
    """An amount as an exact Decimal rounded to cents; a non-number is a 2010 fault."""
    return number(value, element).quantize(CENT, rounding=ROUND_HALF_UP)


def number(value: Any, element: str) -> Decimal:
    """A JSON number (or numeric string) as a Decimal."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise invalid(f"{element} must be a number", element)
    try:
        result = Decimal(str(value))
    except InvalidOperation as exc:
        raise invalid(f"{element} must be a number", element) from exc
    if not result.is_finite():
        raise invalid(f"{element} must be finite", element)
    return within_range(result, element)


def within_range(value: Decimal, element: str) -> Decimal:
    """``value`` unless its magnitude exceeds :data:`MAX_MAGNITUDE` (a 2050 fault)."""
    if abs(value) > MAX_MAGNITUDE:
        raise out_of_range(element, MAX_MAGNITUDE)
    return value


def _text(fields: dict[str, Any], key: str, limit: int) -> str | None:
    value = fields.get(key)
    if value is None:
        return None
    text = str(value)
    if len(text) > limit:
        raise too_long(key, limit)
    return text


def _date(fields: dict[str, Any], key: str) -> date | None:
    value = fields.get(key)
    if value is None:
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise business(f"{key} must be a date (YYYY-MM-DD): {value}", key) from exc


def reference(
    lookup: Lookup, fields: dict[str, Any], key: str, entity: str, name_field: str
) -> dict[str, str] | None:
    """Resolve a ``{"value": id}`` reference to an active object (610 otherwise); None when absent."""
    ref = fields.get(key)
    if ref is None:
        return None
    if not isinstance(ref, dict) or ref.get("value") in (None, ""):
        raise required(f"{key}.value")
    target = lookup.visible(entity, str(ref["value"]))
    if target is None or target.get("Active") is False:
        raise not_found(
            entity, f"Object Not Found : Something you're trying to use has been made inactive. {key}"
        )
    return {"value": target["Id"], "name": str(target.get(name_field, ""))}


def _required_reference(
    lookup: Lookup, fields: dict[str, Any], key: str, entity: str, name_field: str
) -> dict:
    ref = reference(lookup, fields, key, entity, name_field)
    if ref is None:
        raise required(key)
    return ref


def _sales_line(lookup: Lookup, line: Any, line_no: int) -> dict[str, Any]:
    if not isinstance(line, dict):
        raise business("Each Line must be an object", "Line")
    detail_type = line.get("DetailType")
    out: dict[str, Any] = {"Id": str(line_no), "LineNum": line_no}
    if line.get("Description") is not None:
        out["Description"] = _text(line, "Description", 4000)
    if detail_type == "DescriptionOnly":
        return {**out, "Amount": Decimal("0.00"), "DetailType": detail_type, "DescriptionLineDetail": {}}
    if detail_type != "SalesItemLineDetail":
        raise (
            required("Line.DetailType")
            if detail_type is None
            else business(f"Unsupported DetailType {detail_type}")
        )
    raw = line.get("SalesItemLineDetail")
    detail = dict(raw) if isinstance(raw, dict) else {}
    detail["ItemRef"] = _required_reference(lookup, detail, "ItemRef", "Item", "Name")
    qty = number(detail["Qty"], "Qty") if detail.get("Qty") is not None else None
    price = number(detail["UnitPrice"], "UnitPrice") if detail.get("UnitPrice") is not None else None
    computed = None
    if qty is not None and price is not None:
        computed = within_range((qty * price).quantize(CENT, ROUND_HALF_UP), "Line.Amount")
    if line.get("Amount") is None:
        if computed is None:
            raise required("Line.Amount")
        amount = computed
    else:
        amount = money(line["Amount"], "Amount")
        # Qty and UnitPrice both 0 stand for "not given": python-quickbooks sends them so with an Amount-only line,
        # which Intuit accepts; any other pair must multiply to the Amount
        if computed is not None and computed != amount and (qty or price):
            raise validation(
                "6070",
                "Amount calculation incorrect",
                f"Amount is not equal to UnitPrice * Qty. Supplied value:{amount}",
                "Line.Amount",
            )
    for key, value in (("Qty", qty), ("UnitPrice", price)):
        if value is not None:
            detail[key] = value
    return {**out, "Amount": amount, "DetailType": detail_type, "SalesItemLineDetail": detail}


def sales_lines(lookup: Lookup, lines: Any) -> tuple[list[dict[str, Any]], Decimal]:
    """Normalise a sales ``Line`` array (subtotal lines dropped, one appended) and return it with its total."""
    if not isinstance(lines, list):
        raise required("Line")
    items = [
        line
        for line in lines
        if not (isinstance(line, dict) and line.get("DetailType") == "SubTotalLineDetail")
    ]
    if not items:
        raise required("Line")
    normalised = [_sales_line(lookup, line, n) for n, line in enumerate(items, start=1)]
    total = within_range(sum((line["Amount"] for line in normalised), Decimal("0.00")), "TotalAmt")
    normalised.append({"Amount": total, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}})
    return normalised, total


def _sales_transaction(lookup: Lookup, fields: dict[str, Any]) -> tuple[dict[str, Any], Decimal]:
    """The header and lines every sales form shares (Invoice, CreditMemo, RefundReceipt)."""
    body = dict(fields)
    body["CustomerRef"] = _required_reference(lookup, fields, "CustomerRef", "Customer", "DisplayName")
    body["Line"], total = sales_lines(lookup, fields.get("Line"))
    _text(fields, "DocNumber", 21)
    _text(fields, "PrivateNote", 4000)
    body["TxnDate"] = (_date(fields, "TxnDate") or lookup.today()).isoformat()
    body.setdefault("CurrencyRef", USD)
    body["TotalAmt"] = total
    return body, total


def build_invoice(lookup: Lookup, fields: dict[str, Any]) -> dict[str, Any]:
    """Invoice: CustomerRef and Line required; TotalAmt = Σ lines; DueDate defaults to Net 30."""
    body, _ = _sales_transaction(lookup, fields)
    due = _date(fields, "DueDate") or date.fromisoformat(body["TxnDate"]) + timedelta(days=30)
    body["DueDate"] = due.isoformat()
    body.setdefault("EmailStatus", "NotSet")
    return body


def build_credit_memo(lookup: Lookup, fields: dict[str, Any]) -> dict[str, Any]:
    """CreditMemo: like an invoice; the whole amount is remaining credit."""
    body, total = _sales_transaction(lookup, fields)
    body["Balance"] = total
    body["RemainingCredit"] = total
    return body


def build_refund_receipt(lookup: Lookup, fields: dict[str, Any]) -> dict[str, Any]:
    """RefundReceipt: money paid back to a customer, optionally from a deposit account; ``LinkedTxn`` may name the
    invoices or payments it refunds (of the same customer). It does not change any balance."""
    body, _ = _sales_transaction(lookup, fields)
    account = reference(lookup, fields, "DepositToAccountRef", "Account", "Name")
    if account is not None:
        body["DepositToAccountRef"] = account
    if "LinkedTxn" in fields:
        body["LinkedTxn"] = _links(lookup, fields["LinkedTxn"], REFUNDABLE, body["CustomerRef"]["value"])
    body["Balance"] = Decimal("0.00")
    return body


REFUNDABLE = ("Invoice", "Payment")  # what a refund receipt's LinkedTxn may name
APPLICABLE = ("Invoice", "CreditMemo")  # what a payment line may link: invoices it pays, credit memos it uses


def _links(lookup: Lookup, links: Any, types: tuple[str, ...], customer_id: str) -> list[dict[str, str]]:
    """``LinkedTxn`` entries naming visible transactions of ``types`` that belong to the customer."""
    if not isinstance(links, list):
        raise business("LinkedTxn must be an array", "LinkedTxn")
    checked = []
    for link in links:
        if not isinstance(link, dict) or link.get("TxnId") in (None, ""):
            raise required("LinkedTxn.TxnId")
        txn_type, txn_id = link.get("TxnType"), str(link["TxnId"])
        if txn_type not in types:
            raise business(f"Unsupported LinkedTxn TxnType {txn_type}", "LinkedTxn.TxnType")
        target = lookup.visible(txn_type, txn_id)
        if target is None:
            raise not_found(txn_type, f"Object Not Found : {txn_type} {txn_id} referenced by LinkedTxn")
        if target["CustomerRef"]["value"] != customer_id:
            raise business(f"{txn_type} {txn_id} belongs to another customer", "LinkedTxn")
        checked.append({"TxnId": txn_id, "TxnType": txn_type})
    return checked


def build_payment(lookup: Lookup, fields: dict[str, Any]) -> dict[str, Any]:
    """Payment: CustomerRef and TotalAmt required; lines link invoices, or credit memos whose credit pays part of
    them; UnappliedAmt = TotalAmt - (applied to invoices - credit used)."""
    body = dict(fields)
    body["CustomerRef"] = _required_reference(lookup, fields, "CustomerRef", "Customer", "DisplayName")
    if fields.get("TotalAmt") is None:
        raise required("TotalAmt")
    total = money(fields["TotalAmt"], "TotalAmt")
    if total < 0:
        raise business("TotalAmt cannot be negative", "TotalAmt")
    raw_lines = fields.get("Line") or []
    if not isinstance(raw_lines, list):
        raise business("Line must be an array", "Line")
    lines: list[dict[str, Any]] = []
    applied = {txn_type: Decimal("0.00") for txn_type in APPLICABLE}
    for line in raw_lines:
        links = line.get("LinkedTxn") if isinstance(line, dict) else None
        if not isinstance(links, list) or not links:
            raise required("Line.LinkedTxn")
        for link in links:
            if not isinstance(link, dict) or link.get("TxnId") in (None, ""):
                raise required("LinkedTxn.TxnId")
            if link.get("TxnType") not in APPLICABLE:
                raise business(f"Unsupported LinkedTxn TxnType {link.get('TxnType')}", "LinkedTxn.TxnType")
        types = {link["TxnType"] for link in links}
        if len(types) > 1:
            raise business("A payment line links either invoices or credit memos", "Line.LinkedTxn")
        amount = money(line.get("Amount"), "Line.Amount")
        if amount <= 0:
            raise business("A payment line amount must be positive", "Line.Amount")
        applied[types.pop()] += amount
        lines.append(
            {
                "Amount": amount,
                "LinkedTxn": [{"TxnId": str(link["TxnId"]), "TxnType": link["TxnType"]} for link in links],
            }
        )
    # credit memo lines pay invoices with credit instead of money: only the rest is paid from TotalAmt
    paid = applied["Invoice"] - applied["CreditMemo"]
    if paid < 0:
        raise business("The credit applied exceeds the amount applied to invoices", "Line.Amount")
    if paid > total:
        raise business("The amount applied to invoices exceeds the payment's TotalAmt", "Line.Amount")
    _text(fields, "PaymentRefNum", 21)
    _text(fields, "PrivateNote", 4000)
    account = reference(lookup, fields, "DepositToAccountRef", "Account", "Name")
    if account is not None:
        body["DepositToAccountRef"] = account
    body.update(
        Line=lines,
        TotalAmt=total,
        UnappliedAmt=total - paid,
        TxnDate=(_date(fields, "TxnDate") or lookup.today()).isoformat(),
    )
    body.setdefault("CurrencyRef", USD)
    return body


NAME_PARTS = ("Title", "GivenName", "MiddleName", "FamilyName", "Suffix")


def build_customer(lookup: Lookup, fields: dict[str, Any]) -> dict[str, Any]:
    """Customer: DisplayName (derived from the name parts or CompanyName when absent), unique, no ``:``/tab/newline."""
    body = dict(fields)
    display = fields.get("DisplayName") or " ".join(str(fields[p]) for p in NAME_PARTS if fields.get(p))
    display = display or fields.get("CompanyName")
    if not display:
        raise required("DisplayName")
    body["DisplayName"] = str(display)
    _text(body, "DisplayName", 500)
    if any(char in body["DisplayName"] for char in ":\t\n"):
        raise business("DisplayName cannot contain a colon (:), a tab or a new line", "DisplayName")
    _text(fields, "Notes", 2000)
    phone = fields.get("PrimaryPhone")
    if isinstance(phone, dict):
        _text(phone, "FreeFormNumber", 30)
    body.setdefault("PrintOnCheckName", body["DisplayName"])
    body["FullyQualifiedName"] = body["DisplayName"]
    body.setdefault("Active", True)
    body.setdefault("Job", False)
    body.setdefault("BillWithParent", False)
    body.setdefault("Taxable", False)
    body.setdefault("CurrencyRef", USD)
    body.setdefault("PreferredDeliveryMethod", "Print")
    return body


ITEM_TYPES = ("Service", "NonInventory", "Inventory")


def build_item(lookup: Lookup, fields: dict[str, Any]) -> dict[str, Any]:
    """Item: Name required and unique; Service/Inventory need an IncomeAccountRef; Inventory its stock fields."""
    body = dict(fields)
    if not fields.get("Name"):
        raise required("Name")
    _text(fields, "Name", 100)
    _text(fields, "Sku", 100)
    _text(fields, "Description", 4000)
    item_type = body.setdefault("Type", "Service")
    if item_type not in ITEM_TYPES:
        raise business(f"Unsupported item Type {item_type}", "Type")
    for key in ("IncomeAccountRef", "ExpenseAccountRef", "AssetAccountRef"):
        ref = reference(lookup, fields, key, "Account", "Name")
        if ref is not None:
            body[key] = ref
    needed = ["IncomeAccountRef"] if item_type == "Service" else []
    if item_type == "Inventory":
        needed = ["IncomeAccountRef", "AssetAccountRef", "InvStartDate", "QtyOnHand", "TrackQtyOnHand"]
    for key in needed:
        if body.get(key) is None:
            raise required(key)
    body["UnitPrice"] = number(fields.get("UnitPrice", 0), "UnitPrice")
    body["FullyQualifiedName"] = body["Name"]
    body.setdefault("Active", True)
    body.setdefault("Taxable", False)
    body.setdefault("TrackQtyOnHand", False)
    return body


ACCOUNT_CLASSIFICATION = {
    "Income": "Revenue",
    "Other Income": "Revenue",
    "Expense": "Expense",
    "Cost of Goods Sold": "Expense",
    "Bank": "Asset",
    "Other Current Asset": "Asset",
    "Accounts Receivable": "Asset",
    "Accounts Payable": "Liability",
    "Equity": "Equity",
}


def build_account(lookup: Lookup, fields: dict[str, Any]) -> dict[str, Any]:
    """Account: Name and AccountType required; Classification derived from the type."""
    body = dict(fields)
    if not fields.get("Name"):
        raise required("Name")
    _text(fields, "Name", 100)
    account_type = fields.get("AccountType")
    if not account_type:
        raise required("AccountType")
    if account_type not in ACCOUNT_CLASSIFICATION:
        raise business(f"Unsupported AccountType {account_type}", "AccountType")
    body["Classification"] = ACCOUNT_CLASSIFICATION[account_type]
    body["FullyQualifiedName"] = body["Name"]
    body.setdefault("SubAccount", False)
    body.setdefault("Active", True)
    body.setdefault("CurrentBalance", Decimal("0.00"))
    body.setdefault("CurrencyRef", USD)
    return body


def _read_only(lookup: Lookup, fields: dict[str, Any]) -> dict[str, Any]:
    raise unsupported("Operation is not supported for this entity.")


_SALES_WRITABLE = frozenset(
    {"CustomerRef", "Line", "DocNumber", "TxnDate", "PrivateNote", "CustomerMemo", "CurrencyRef"}
)

SPECS: dict[str, EntitySpec] = {
    spec.name.lower(): spec
    for spec in (
        EntitySpec(
            "Customer",
            "name",
            frozenset(
                {
                    *NAME_PARTS,
                    *[
                        "DisplayName",
                        "CompanyName",
                        "PrintOnCheckName",
                        "PrimaryEmailAddr",
                        "PrimaryPhone",
                        "Mobile",
                        "Fax",
                        "WebAddr",
                    ],
                    *[
                        "BillAddr",
                        "ShipAddr",
                        "Notes",
                        "Active",
                        "Taxable",
                        "CurrencyRef",
                        "PreferredDeliveryMethod",
                        "Job",
                    ],
                    *["ParentRef", "BillWithParent", "ResaleNum", "SalesTermRef", "PaymentMethodRef"],
                }
            ),
            frozenset({"Balance", "BalanceWithJobs", "FullyQualifiedName"}),
            build_customer,
            unique_field="DisplayName",
        ),
        EntitySpec(
            "Item",
            "name",
            frozenset(
                [
                    "Name",
                    "Type",
                    "UnitPrice",
                    "Description",
                    "Sku",
                    "Active",
                    "IncomeAccountRef",
                    "ExpenseAccountRef",
                    "AssetAccountRef",
                    "InvStartDate",
                    "QtyOnHand",
                    "TrackQtyOnHand",
                    "Taxable",
                    "PurchaseDesc",
                    "PurchaseCost",
                ]
            ),
            frozenset({"FullyQualifiedName"}),
            build_item,
            unique_field="Name",
        ),
        EntitySpec(
            "Account",
            "name",
            frozenset(
                ["Name", "AccountType", "AccountSubType", "Description", "Active", "AcctNum", "CurrencyRef"]
            ),
            frozenset({"Classification", "CurrentBalance", "FullyQualifiedName", "SubAccount"}),
            build_account,
            unique_field="Name",
        ),
        EntitySpec(
            "Invoice",
            "transaction",
            _SALES_WRITABLE | {"DueDate", "BillEmail", "BillAddr", "ShipAddr", "SalesTermRef", "EmailStatus"},
            frozenset({"TotalAmt", "Balance", "LinkedTxn"}),
            build_invoice,
        ),
        EntitySpec(
            "Payment",
            "transaction",
            frozenset(
                [
                    "CustomerRef",
                    "TotalAmt",
                    "Line",
                    "TxnDate",
                    "PaymentRefNum",
                    "PrivateNote",
                    "PaymentMethodRef",
                    "DepositToAccountRef",
                    "CurrencyRef",
                ]
            ),
            frozenset({"UnappliedAmt"}),
            build_payment,
        ),
        EntitySpec(
            "CreditMemo",
            "transaction",
            _SALES_WRITABLE,
            frozenset({"TotalAmt", "Balance", "RemainingCredit"}),
            build_credit_memo,
        ),
        EntitySpec(
            "RefundReceipt",
            "transaction",
            _SALES_WRITABLE | {"PaymentRefNum", "DepositToAccountRef", "PaymentMethodRef", "LinkedTxn"},
            frozenset({"TotalAmt", "Balance"}),
            build_refund_receipt,
        ),
        EntitySpec(
            "CompanyInfo",
            "info",
            frozenset(),
            frozenset(
                [
                    "CompanyName",
                    "LegalName",
                    "CompanyAddr",
                    "Country",
                    "Email",
                    "PrimaryPhone",
                    "FiscalYearStartMonth",
                    "SupportedLanguages",
                    "CompanyStartDate",
                ]
            ),
            _read_only,
        ),
    )
}


def spec_for(name: str) -> EntitySpec | None:
    """The spec of an entity named in any case (``invoice``, ``Invoice``), or None."""
    return SPECS.get(name.lower())
