"""The comparison of the full reconciliation: one organisation's Batchly records against a complete, fresh read of
its QuickBooks company, field by field. No I/O: records in, differences out.

Each difference names the record and the field, both values and why they differ, and what the sync's own rules
allow to repair it (:class:`Repair`), or nothing when no rule settles it. :class:`Explanations` then says whether an
open conflict or a listed error (the pull's error list, a failed or dead push) already accounts for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from batchly_pipelines.rules.invoices import doc_number_key
from batchly_pipelines.rules.mapping import decode_snapshot, to_decimal, to_money
from batchly_pipelines.rules.merge import Rule
from batchly_pipelines.rules.name_lists import NameList
from batchly_pipelines.rules.payments import RefundTargets
from batchly_pipelines.services.pull.invoice_payments import (
    DELETED_IN_QUICKBOOKS,
    MirroredFacts,
    RefundIndex,
)

RECORD = "record"  # the "field" of a difference in the ID sets: the record exists on one side only
_NO_BASE: Any = object()


class Repair(StrEnum):
    """What the rules allow the reconciliation to do about a difference."""

    TAKE_QUICKBOOKS = "take QuickBooks' value"  # written into Batchly, base moved to it
    PUSH = "queue a push of Batchly's value"  # the outbox queues the record; the push sends it
    REFRESH = (
        "re-read from QuickBooks and reconcile"  # mirror refreshed, the pull's reconciliation applies it
    )


@dataclass(frozen=True)
class Difference:
    """One field (or a whole record, ``field == "record"``) on which Batchly and QuickBooks disagree."""

    entity: str  # customer | item | invoice
    entity_id: int | None  # Batchly id (None: only in QuickBooks)
    qbo_id: str | None  # QuickBooks id (None: only in Batchly)
    name: str | None  # display name or DocNumber, for people
    field: str
    batchly_value: Any
    qbo_value: Any
    why: str
    repair: Repair | None = None
    explained_by: str | None = None  # an open conflict or a listed error

    @property
    def record(self) -> str:
        """``customer 12 "Zoë" (QuickBooks 57)``."""
        who = f"{self.entity} {self.entity_id}" if self.entity_id is not None else f"QuickBooks {self.entity}"
        label = f' "{self.name}"' if self.name else ""
        twin = (
            f" (QuickBooks {self.qbo_id})" if self.qbo_id is not None and self.entity_id is not None else ""
        )
        alone = f" {self.qbo_id}" if self.entity_id is None else ""
        return f"{who}{alone}{label}{twin}"

    def as_row(self) -> dict[str, str]:
        """The difference as a table row: record, field, both values, why, and what explains or repairs it."""
        return {
            "record": self.record,
            "field": self.field,
            "batchly": _shown(self.batchly_value),
            "quickbooks": _shown(self.qbo_value),
            "why": self.why,
            "explained_by": self.explained_by or "",
            "repair": self.repair.value if self.repair else "",
        }


def _shown(value: Any) -> str:
    return "—" if value is None else str(value)


def compare_name_list(
    kind: NameList, rows: Sequence[Mapping[str, Any]], objects: Mapping[str, Mapping[str, Any]]
) -> list[Difference]:
    """Batchly's customers or items (every row of the organisation, with ``link_base``) against every QuickBooks
    object of the entity by Id: the ID sets both ways, then every synced field of each linked pair."""
    found: list[Difference] = []
    linked = {str(row["qbo_id"]) for row in rows if row["qbo_id"] is not None}
    for row in rows:
        name = row[kind.name_column]
        if row["qbo_id"] is None:
            found.append(
                Difference(
                    kind.entity_type,
                    row["id"],
                    None,
                    name,
                    RECORD,
                    name,
                    None,
                    "only in Batchly: never created in QuickBooks",
                    Repair.PUSH,
                )
            )
            continue
        qbo_id = str(row["qbo_id"])
        obj = objects.get(qbo_id)
        ours = kind.mapping.from_row(row)
        if obj is None:
            if ours["is_active"]:
                found.append(
                    Difference(
                        kind.entity_type,
                        row["id"],
                        qbo_id,
                        name,
                        "is_active",
                        True,
                        None,
                        "deleted in QuickBooks, still active in Batchly",
                        Repair.REFRESH,
                    )
                )
            continue
        theirs = kind.mapping.from_qbo(obj)
        base = (
            decode_snapshot(kind.entity_type, row["link_base"] or {}) if row["link_base"] is not None else {}
        )
        for column in kind.mapping.fields:
            if ours[column] == theirs[column]:
                continue
            why, repair = _settle(kind.policy.rule_for(column), ours[column], theirs[column], base, column)
            found.append(
                Difference(
                    kind.entity_type,
                    row["id"],
                    qbo_id,
                    name,
                    column,
                    ours[column],
                    theirs[column],
                    why,
                    repair,
                )
            )
    for qbo_id, obj in objects.items():
        if qbo_id not in linked:
            theirs = kind.mapping.from_qbo(obj)
            found.append(
                Difference(
                    kind.entity_type,
                    None,
                    qbo_id,
                    theirs[kind.name_column],
                    RECORD,
                    None,
                    theirs[kind.name_column],
                    "only in QuickBooks: no Batchly record is linked to it",
                    Repair.REFRESH,
                )
            )
    return found


def _settle(
    rule: Rule, ours: Any, theirs: Any, base: Mapping[str, Any], column: str
) -> tuple[str, Repair | None]:
    """Why a linked field differs and which side the rules give it to (None: no rule settles it)."""
    if rule is Rule.QBO_OWNS:
        return f"QuickBooks owns {column}", Repair.TAKE_QUICKBOOKS
    if rule is Rule.BATCHLY_OWNS:
        return f"Batchly owns {column}", Repair.PUSH
    was = base.get(column, _NO_BASE)
    if was is _NO_BASE:
        return "never agreed on since the link", None
    if ours == was:
        return "changed in QuickBooks only", Repair.TAKE_QUICKBOOKS
    if theirs == was:
        return "changed in Batchly only", Repair.PUSH
    if rule is Rule.NEEDS_REVIEW:
        return "changed on both sides (review field) and no review is open", None
    return "changed on both sides and no conflict was recorded", None


@dataclass(frozen=True)
class QuickBooksBooks:
    """A complete read of one company's invoices, payments and refund receipts, by Id."""

    invoices: Mapping[str, Mapping[str, Any]]
    payments: Mapping[str, Mapping[str, Any]]
    refunds: Mapping[str, Mapping[str, Any]]

    def facts(self) -> MirroredFacts:
        """The payment facts of every invoice, as the pull derives them, from this read instead of the mirror."""
        return MirroredFacts(
            self.payments, RefundIndex(self.refunds.values()), RefundTargets(self.invoices, self.payments)
        )


def is_voided(invoice: Mapping[str, Any]) -> bool:
    """A QuickBooks invoice that was voided (zero total, ``Voided`` prepended to its note)."""
    return to_money(invoice.get("TotalAmt", 0)) == 0 and str(invoice.get("PrivateNote") or "").startswith(
        "Voided"
    )


PAYMENT_COLUMNS = tuple(DELETED_IN_QUICKBOOKS.as_columns())


def compare_invoices(
    rows: Sequence[Mapping[str, Any]],
    books: QuickBooksBooks,
    today: date,
    lines: Mapping[int, Sequence[Mapping[str, Any]]] | None = None,
    sent: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> tuple[list[Difference], int]:
    """Batchly's invoices (with ``customer_qbo_id``) against the company's: the ID sets (an invoice QuickBooks has
    under the DocNumber of a Batchly invoice it is not linked to is a duplicate), and for each linked one its total,
    DocNumber, customer, dates (TxnDate; DueDate when Batchly has one), void and payment columns (amounts paid,
    due, credited, refunded, status, last payment), and — given Batchly's ``lines`` by invoice id — its lines
    (:func:`compare_invoice_lines`). An unlinked QuickBooks invoice whose DocNumber and customer Batchly's push
    once sent (``sent``: ``qbo_invoice_sends`` by doc key) is an orphan the push created — listed, whatever became of
    the Batchly invoice. Also returns how many QuickBooks invoices are QuickBooks' own (neither a DocNumber Batchly
    has nor one it sent: not synced)."""
    found: list[Difference] = []
    facts = books.facts()
    by_doc = {doc_number_key(str(row["doc_number"])): row for row in rows}
    by_id = {row["id"]: row for row in rows}
    linked = {str(row["qbo_id"]) for row in rows if row["qbo_id"] is not None}
    for row in rows:
        doc = row["doc_number"]

        def differ(column: str, ours: Any, theirs: Any, why: str, repair: Repair | None = None) -> None:
            found.append(
                Difference("invoice", row["id"], row["qbo_id"], doc, column, ours, theirs, why, repair)  # noqa: B023
            )

        if row["qbo_id"] is None:
            if row["status"] == "open":
                differ(
                    RECORD,
                    doc,
                    None,
                    "only in Batchly: an open invoice never created in QuickBooks",
                    Repair.PUSH,
                )
            continue
        obj = books.invoices.get(str(row["qbo_id"]))
        if obj is None:
            expected = DELETED_IN_QUICKBOOKS.as_columns()
        else:
            voided = is_voided(obj)
            if row["status"] == "void" and not voided:
                differ("status", "void", "open", "voided in Batchly, open in QuickBooks", Repair.PUSH)
            if not voided and row["status"] != "void":
                total = to_money(obj.get("TotalAmt", 0))
                if row["total_amount"] != total:
                    differ("total_amount", row["total_amount"], total, "totals differ")
            if str(obj.get("DocNumber") or "") != doc:
                differ("doc_number", doc, obj.get("DocNumber"), "DocNumbers differ")
            customer = str((obj.get("CustomerRef") or {}).get("value"))
            if row["customer_qbo_id"] != customer:
                differ("customer", row["customer_qbo_id"], customer, "billed to another customer")
            for column, key in (("txn_date", "TxnDate"), ("due_date", "DueDate")):
                ours, theirs = _day(row[column]), _day(obj.get(key))
                # the push sends a due date only when Batchly has one (QuickBooks may derive its own from terms)
                if ours is not None and ours != theirs:
                    differ(column, ours, theirs, "dates differ")
            if lines is not None and not voided and row["status"] != "void":
                found.extend(compare_invoice_lines(row, lines.get(row["id"], []), obj))
            expected = facts.columns(obj, today)
        for column, theirs in expected.items():
            if row[column] != theirs:
                why = "deleted in QuickBooks" if obj is None else "payment figures differ from QuickBooks'"
                differ(column, row[column], theirs, why, Repair.REFRESH)
    own = 0
    for qbo_id, obj in books.invoices.items():
        if qbo_id in linked:
            continue
        twin = by_doc.get(doc_number_key(str(obj.get("DocNumber") or "")))
        if twin is None:
            send = _sent_as(obj, sent or {})
            if send is None:
                own += 1
            elif not is_voided(obj):
                sender = by_id.get(send["invoice_id"])
                fate = "" if sender is not None else ", which Batchly no longer has"
                found.append(
                    Difference(
                        "invoice",
                        None if sender is None else sender["id"],
                        qbo_id,
                        str(obj.get("DocNumber") or ""),
                        RECORD,
                        None,
                        qbo_id,
                        f"only in QuickBooks: created by Batchly's push (sent as DocNumber {send['doc_number']} for "
                        f"invoice {send['invoice_id']}{fate}), and no Batchly invoice is linked to it (an orphan)",
                    )
                )
        elif not is_voided(obj):
            found.append(
                Difference(
                    "invoice",
                    twin["id"],
                    qbo_id,
                    twin["doc_number"],
                    RECORD,
                    twin["qbo_id"],
                    qbo_id,
                    f"QuickBooks invoice {qbo_id} carries this DocNumber but is not its twin (a duplicate?)",
                )
            )
    return found, own


def _sent_as(
    obj: Mapping[str, Any], sent: Mapping[str, Sequence[Mapping[str, Any]]]
) -> Mapping[str, Any] | None:
    """The send (DocNumber and customer, as the push's DocNumber guard compares them) a QuickBooks invoice matches."""
    customer = str((obj.get("CustomerRef") or {}).get("value"))
    for send in sent.get(doc_number_key(str(obj.get("DocNumber") or "")), []):
        if str(send["customer_qbo_id"]) == customer:
            return send
    return None


LINE_WHY = "lines differ (a pushed invoice is immutable in QuickBooks: reported, not rewritten)"


def _line_values(line: Mapping[str, Any], obj: Mapping[str, Any] | None) -> dict[str, Any]:
    """A Batchly invoice line (``obj`` None) or a QuickBooks invoice line as the push maps them: item, quantity,
    unit price, amount, description."""
    if obj is None:
        return {
            "item": None if line["item_qbo_id"] is None else str(line["item_qbo_id"]),
            "quantity": _number(line["quantity"]),
            "unit_price": _number(line["unit_price"]),
            "amount": to_money(line["amount"]),
            "description": _text(line["description"]),
        }
    detail = line.get("SalesItemLineDetail") or {}
    item = (detail.get("ItemRef") or {}).get("value")
    return {
        "item": None if item is None else str(item),
        "quantity": _number(detail.get("Qty")),
        "unit_price": _number(detail.get("UnitPrice")),
        "amount": to_money(line.get("Amount")),
        "description": _text(line.get("Description")),
    }


def _number(value: Any) -> Decimal | None:
    return None if value is None else to_decimal(value)


def _text(value: Any) -> str | None:
    return None if value is None else (str(value).strip() or None)


def compare_invoice_lines(
    row: Mapping[str, Any], ours: Sequence[Mapping[str, Any]], obj: Mapping[str, Any]
) -> list[Difference]:
    """A linked invoice's Batchly lines (``line_no`` order, with ``item_qbo_id``) against its QuickBooks invoice's
    item and description lines (``LineNum`` order; the server's subtotal line left out), pair by pair as the push
    sends them: item, quantity, unit price (when QuickBooks states them), amount, description. A line one side lacks is a difference of field
    ``line N``; a differing field of ``line N <field>`` (N: Batchly's ``line_no``, else QuickBooks' ``LineNum``).
    No repair: QuickBooks keeps a pushed invoice as it was sent (a correction is a void and a new invoice)."""
    theirs = sorted(
        (line for line in obj.get("Line") or [] if line.get("DetailType") != "SubTotalLineDetail"),
        key=lambda line: int(line.get("LineNum") or 0),
    )
    found: list[Difference] = []

    def differ(field: str, batchly: Any, quickbooks: Any, why: str) -> None:
        found.append(
            Difference(
                "invoice", row["id"], row["qbo_id"], row["doc_number"], field, batchly, quickbooks, why
            )
        )

    for position in range(max(len(ours), len(theirs))):
        mine = ours[position] if position < len(ours) else None
        other = theirs[position] if position < len(theirs) else None
        number = mine["line_no"] if mine is not None else (other or {}).get("LineNum", position + 1)
        if mine is None or other is None:
            present = _line_values(mine, None) if mine is not None else _line_values(other or {}, other)
            shown = f"item {present['item']}, qty {present['quantity']}, amount {present['amount']}"
            side = "Batchly" if mine is not None else "QuickBooks"
            differ(
                f"line {number}",
                shown if mine is not None else None,
                shown if other is not None else None,
                f"{LINE_WHY}; only in {side}",
            )
            continue
        a, b = _line_values(mine, None), _line_values(other, other)
        for name, value in a.items():
            if name in ("quantity", "unit_price") and b[name] is None:
                continue  # an amount-only line (QuickBooks states no Qty or UnitPrice): its amount is compared
            if value != b[name]:
                differ(f"line {number} {name}", value, b[name], LINE_WHY)
    return found


def _day(value: Any) -> date | None:
    """A date column or QuickBooks' ``YYYY-MM-DD`` as a date (a datetime's date part)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


class Explanations:
    """What already accounts for a difference: an open conflict of the record (on that field, or its link), an entry
    of the pull's error list on that field (any field for a record missing from Batchly, which the error keeps out;
    any payment column of an invoice, which the pull writes all or none), a push of the record that failed or went to
    the dead letter."""

    def __init__(
        self,
        conflicts: Iterable[Mapping[str, Any]],
        pull_errors: Iterable[Mapping[str, Any]],
        pushes: Iterable[Mapping[str, Any]],
        qbo_entities: Mapping[str, str],
    ) -> None:
        self._conflicts: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for conflict in conflicts:
            for key in _keys(conflict["entity_id"], conflict["qbo_id"]):
                self._conflicts.setdefault((conflict["entity_type"], key), []).append(conflict)
        entities = {qbo: ours for ours, qbo in qbo_entities.items()}
        self._errors: dict[tuple[str, str], list[tuple[str | None, str]]] = {}
        for error in pull_errors:
            entity = entities.get(error["entity_type"], error["entity_type"].lower())
            listed = (error["field"], f"pull error: {error['message']}")
            self._errors.setdefault((entity, f"qbo:{error['qbo_id']}"), []).append(listed)
            if error["entity_id"] is not None:
                self._errors.setdefault((entity, f"id:{error['entity_id']}"), []).append(listed)
        for push in pushes:
            if push["status"] == "dead" or push["last_error"]:
                state = "dead letter" if push["status"] == "dead" else "push failing"
                self._errors.setdefault((push["entity_type"], f"id:{push['entity_id']}"), []).append(
                    (None, f"{state} (queue row {push['id']}): {push['last_error'] or 'no message'}")
                )

    def explain(self, difference: Difference) -> Difference:
        """``difference`` with ``explained_by`` set when something accounts for it."""
        keys = _keys(difference.entity_id, difference.qbo_id)
        for key in keys:
            for conflict in self._conflicts.get((difference.entity, key), []):
                if conflict["field"] in (difference.field, "link") or difference.field == RECORD:
                    return replace(
                        difference, explained_by=f"open conflict {conflict['id']} ({conflict['field']})"
                    )
        for key in keys:
            for field, text in self._errors.get((difference.entity, key), []):
                if field is None or _error_covers(difference, field):
                    return replace(difference, explained_by=text)
        return difference


def _error_covers(difference: Difference, field: str) -> bool:
    """Whether a pull error listed on ``field`` accounts for ``difference``."""
    if difference.field in (field, RECORD) or difference.entity_id is None:
        return True
    return difference.entity == "invoice" and difference.field in PAYMENT_COLUMNS and field in PAYMENT_COLUMNS


def _keys(entity_id: int | None, qbo_id: str | None) -> list[str]:
    """The keys a record is known by: its Batchly id and its QuickBooks id, whichever it has."""
    return ([f"id:{entity_id}"] if entity_id is not None else []) + (
        [f"qbo:{qbo_id}"] if qbo_id is not None else []
    )
