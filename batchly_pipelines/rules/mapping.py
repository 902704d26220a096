"""Mapping between QuickBooks Online JSON objects and Batchly columns.

Every synced value passes through one normaliser per kind, on both sides, so that values compare equal
whenever they mean the same thing:

- text: leading/trailing whitespace is stripped; ``None``, ``""`` and whitespace-only all become ``None``;
- money: ``Decimal`` rounded half-up to cents (Batchly stores ``NUMERIC(12,2)``); floats go through ``repr``;
  a missing amount is 0 (``items.unit_price`` is ``NOT NULL DEFAULT 0``, as an unset QuickBooks price);
- flag (``Active``/``is_active``): a missing value means active, as in QuickBooks; 0 / 1 become booleans.

Bodies built for QuickBooks carry money as ``Decimal``; the HTTP client must serialise them as JSON numbers.
In a full body an empty field is left out (a full update clears what it omits); in a sparse body an empty text
field is sent as ``""`` so that QuickBooks clears it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

FieldKind = Literal["text", "money", "flag"]
JSONScalar = str | bool | None

CENT = Decimal("0.01")


def to_decimal(value: object) -> Decimal:
    """Return a JSON or database number as a finite ``Decimal``; floats go through ``repr``."""
    if isinstance(value, float):
        value = repr(value)
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise TypeError(f"not a number: {value!r}")
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return number


def _to_amount(value: object) -> Decimal:
    return to_decimal(0 if value is None else value).quantize(CENT, rounding=ROUND_HALF_UP)


def to_money(value: object) -> Decimal | None:
    """Return ``value`` as a ``Decimal`` rounded half-up to cents (``None`` stays ``None``)."""
    return None if value is None else _to_amount(value)


def _to_text(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"not text: {value!r}")
    return value.strip() or None


def _to_flag(value: object) -> bool:
    if value is None:
        return True
    if value not in (True, False):  # SQLite without a column type hands back 0 / 1
        raise TypeError(f"not a boolean: {value!r}")
    return bool(value)


_NORMALISERS = {"text": _to_text, "money": _to_amount, "flag": _to_flag}


@dataclass(frozen=True)
class FieldSpec:
    """One synced field: the Batchly column, its path in the QuickBooks object and its kind."""

    column: str
    path: tuple[str, ...]
    kind: FieldKind = "text"

    def normalise(self, value: object) -> Any:
        """``value`` in the canonical form of this field's kind."""
        return _NORMALISERS[self.kind](value)


@dataclass(frozen=True)
class EntityMapping:
    """The synced fields of one entity and the conversions between both sides."""

    entity: str
    specs: tuple[FieldSpec, ...]

    @property
    def fields(self) -> tuple[str, ...]:
        """The synced Batchly column names, in order."""
        return tuple(spec.column for spec in self.specs)

    def normalise(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Normalise the synced columns present in ``fields``; other keys are dropped."""
        return {s.column: s.normalise(fields[s.column]) for s in self.specs if s.column in fields}

    def from_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The normalised synced columns of a Batchly row (every synced column must be present)."""
        return {spec.column: spec.normalise(row[spec.column]) for spec in self.specs}

    def from_qbo(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """The normalised synced columns read from a QuickBooks object."""
        return {spec.column: spec.normalise(_get_path(obj, spec.path)) for spec in self.specs}

    def to_qbo(self, fields: Mapping[str, Any], *, only: Iterable[str] | None = None) -> dict[str, Any]:
        """A full body from ``fields``, or a sparse one limited to the columns in ``only``.

        A sparse body that touches one member of a nested object (``BillAddr``) carries the whole object, taken
        from ``fields``: QuickBooks replaces a nested object as a unit, so sending only the changed member would
        clear the others. ``fields`` must then hold every member of that object.
        """
        sparse = only is not None
        wanted = set(self.fields if only is None else only)
        unknown = wanted - set(self.fields)
        if unknown:
            raise ValueError(f"not synced {self.entity} fields: {sorted(unknown)}")
        if sparse:
            groups = {spec.path[0] for spec in self.specs if spec.column in wanted and len(spec.path) > 1}
            wanted |= {spec.column for spec in self.specs if len(spec.path) > 1 and spec.path[0] in groups}
            missing = wanted - set(fields)
            if missing:
                raise ValueError(
                    f"a sparse {self.entity} update sends {sorted(groups)} whole: fields lacks {sorted(missing)}"
                )
        body: dict[str, Any] = {}
        for spec in self.specs:
            if spec.column not in wanted:
                continue
            value = spec.normalise(fields[spec.column])
            if value is None:  # only text can be empty
                if not sparse:
                    continue
                value = ""
            _set_path(body, spec.path, value)
        return body


def _get_path(obj: Mapping[str, Any], path: tuple[str, ...]) -> object:
    node: object = obj
    for key in path:
        if type(node) is not dict and not isinstance(
            node, Mapping
        ):  # a dict (decoded JSON) is told apart first
            return None
        node = node.get(key)
    return node


def _set_path(body: dict[str, Any], path: tuple[str, ...], value: object) -> None:
    *parents, leaf = path
    node = body
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


CUSTOMER_MAPPING = EntityMapping(
    "customer",
    (
        FieldSpec("display_name", ("DisplayName",)),
        FieldSpec("company_name", ("CompanyName",)),
        FieldSpec("given_name", ("GivenName",)),
        FieldSpec("family_name", ("FamilyName",)),
        FieldSpec("email", ("PrimaryEmailAddr", "Address")),
        FieldSpec("phone", ("PrimaryPhone", "FreeFormNumber")),
        FieldSpec("bill_line1", ("BillAddr", "Line1")),
        FieldSpec("bill_city", ("BillAddr", "City")),
        FieldSpec("bill_region", ("BillAddr", "CountrySubDivisionCode")),
        FieldSpec("bill_postal_code", ("BillAddr", "PostalCode")),
        FieldSpec("bill_country", ("BillAddr", "Country")),
        FieldSpec("notes", ("Notes",)),
        FieldSpec("is_active", ("Active",), "flag"),
    ),
)

ITEM_MAPPING = EntityMapping(
    "item",
    (
        FieldSpec("name", ("Name",)),
        FieldSpec("sku", ("Sku",)),
        FieldSpec("description", ("Description",)),
        FieldSpec("unit_price", ("UnitPrice",), "money"),
        FieldSpec("item_type", ("Type",)),
        FieldSpec("is_active", ("Active",), "flag"),
    ),
)

MAPPINGS: Mapping[str, EntityMapping] = {m.entity: m for m in (CUSTOMER_MAPPING, ITEM_MAPPING)}

CUSTOMER_FIELDS = CUSTOMER_MAPPING.fields
ITEM_FIELDS = ITEM_MAPPING.fields
SYNCED_FIELDS: Mapping[str, tuple[str, ...]] = {entity: m.fields for entity, m in MAPPINGS.items()}


def customer_fields_from_qbo(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The synced Batchly customer columns read from a QuickBooks ``Customer`` object."""
    return CUSTOMER_MAPPING.from_qbo(obj)


def customer_fields_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The normalised synced columns of a Batchly ``customers`` row."""
    return CUSTOMER_MAPPING.from_row(row)


def customer_to_qbo(fields: Mapping[str, Any], *, only: Iterable[str] | None = None) -> dict[str, Any]:
    """A QuickBooks ``Customer`` body: full, or sparse limited to the columns in ``only``."""
    return CUSTOMER_MAPPING.to_qbo(fields, only=only)


def item_fields_from_qbo(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The synced Batchly item columns read from a QuickBooks ``Item`` object."""
    return ITEM_MAPPING.from_qbo(obj)


def item_fields_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The normalised synced columns of a Batchly ``items`` row."""
    return ITEM_MAPPING.from_row(row)


def item_to_qbo(fields: Mapping[str, Any], *, only: Iterable[str] | None = None) -> dict[str, Any]:
    """A QuickBooks ``Item`` body (no account refs): full, or sparse limited to the columns in ``only``."""
    return ITEM_MAPPING.to_qbo(fields, only=only)


def with_identity(body: Mapping[str, Any], *, qbo_id: str, sync_token: str, sparse: bool) -> dict[str, Any]:
    """``body`` as an update of QuickBooks object ``qbo_id`` at ``sync_token``."""
    return {**body, "Id": qbo_id, "SyncToken": sync_token, "sparse": sparse}


def invoice_to_qbo(
    invoice: Mapping[str, Any],
    lines: Iterable[Mapping[str, Any]],
    *,
    customer_qbo_id: str,
    item_qbo_ids: Mapping[Any, str],
    replaces_doc_number: str | None = None,
) -> dict[str, Any]:
    """A QuickBooks ``Invoice`` create body from a Batchly invoice row and its lines.

    ``item_qbo_ids`` maps Batchly item ids to QuickBooks item ids. A replacement invoice notes the document
    number of the invoice it replaces in ``PrivateNote``.
    """
    ordered = sorted(lines, key=lambda line: line["line_no"])
    body: dict[str, Any] = {
        "CustomerRef": {"value": customer_qbo_id},
        "Line": [_invoice_line(line, item_qbo_ids) for line in ordered],
    }
    doc_number = invoice_doc_number(invoice)
    if doc_number is not None:
        body["DocNumber"] = doc_number
    for column, key in (("txn_date", "TxnDate"), ("due_date", "DueDate")):
        day = invoice.get(column)
        if day is not None:
            body[key] = _as_date(day).isoformat()
    if replaces_doc_number is not None:
        body["PrivateNote"] = f"Replaces invoice {replaces_doc_number}"
    return body


def invoice_doc_number(invoice: Mapping[str, Any]) -> str | None:
    """The DocNumber an invoice is sent with: trimmed, ``None`` when blank (QuickBooks would number it itself)."""
    return _to_text(invoice.get("doc_number"))


def _invoice_line(line: Mapping[str, Any], item_qbo_ids: Mapping[Any, str]) -> dict[str, Any]:
    item_id = line["item_id"]
    if item_id not in item_qbo_ids:
        raise ValueError(f"invoice line {line.get('id')}: item {item_id!r} has no QuickBooks id")
    body: dict[str, Any] = {
        "LineNum": line["line_no"],
        "Amount": to_money(line["amount"]),
        "DetailType": "SalesItemLineDetail",
        "SalesItemLineDetail": {
            "ItemRef": {"value": item_qbo_ids[item_id]},
            "Qty": to_decimal(line["quantity"]),
            "UnitPrice": to_decimal(line["unit_price"]),
        },
    }
    description = _to_text(line.get("description"))
    if description is not None:
        body["Description"] = description
    return body


def _as_date(value: date) -> date:
    return value.date() if isinstance(value, datetime) else value


def encode_snapshot(fields: Mapping[str, Any]) -> dict[str, JSONScalar]:
    """Synced field values as JSON-safe scalars (money as a decimal string) for storing a merge base."""
    return {key: str(value) if isinstance(value, Decimal) else value for key, value in fields.items()}


def decode_snapshot(entity: str, data: Mapping[str, JSONScalar]) -> dict[str, Any]:
    """The inverse of :func:`encode_snapshot` for ``entity``; a partial snapshot stays partial."""
    return MAPPINGS[entity].normalise(data)
