"""Consistency checks of the pull, read-only over the mirror and Batchly (the Dagster asset checks call these).

Each returns the number of records that fail and a few of them as examples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from batchly_pipelines.rules.mapping import decode_snapshot, to_money
from batchly_pipelines.rules.merge import Rule
from batchly_pipelines.rules.name_lists import NameList
from batchly_pipelines.services.pull.invoice_payments import MirroredFacts, RefundIndex
from batchly_pipelines.store.conflicts import count_open, open_conflict_fields
from batchly_pipelines.store.db import Connection, Engine
from batchly_pipelines.store.invoice_payments import linked_totals, reconciled_payments
from batchly_pipelines.store.pull_errors import errors_by_organization
from batchly_pipelines.store.records import reconciled_rows

CHUNK = 1000
EXAMPLES = 10

Organizations = int | Sequence[int]
# (conn, organisation(s), after id, limit) → the next rows by id, each with its ``organization_id``
Page = Callable[[Connection, Organizations, int, int], list[dict[str, Any]]]


@dataclass
class CheckOutcome:
    """How many records were checked and which failed (up to ``EXAMPLES`` of them kept)."""

    checked: int = 0
    failed: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when nothing failed."""
        return self.failed == 0

    def fail(self, example: dict[str, Any]) -> None:
        """Count one failure, keeping it as an example while there are few."""
        self.failed += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(example)


def _chunks(engine: Engine, page: Page, organizations: Organizations) -> Iterator[list[dict[str, Any]]]:
    """The rows ``page`` reads, in chunks by keyset on their integer ``id`` — of every organisation at once: one
    statement per chunk, not per organisation — each read in its own connection."""
    after = 0
    while True:
        with engine.connect() as conn:
            rows = page(conn, organizations, after, CHUNK)
        if not rows:
            return
        yield rows
        after = rows[-1]["id"]


def _outcomes(organization_ids: Sequence[int]) -> dict[int, CheckOutcome]:
    return {org: CheckOutcome() for org in dict.fromkeys(organization_ids)}


def record_drift(engine: Engine, kind: NameList, organization_id: int) -> CheckOutcome:
    """:func:`records_drift` of one organisation."""
    return records_drift(engine, kind, [organization_id])[organization_id]


def records_drift(engine: Engine, kind: NameList, organization_ids: Sequence[int]) -> dict[int, CheckOutcome]:
    """Per organisation: linked records reconciled with QuickBooks' current version whose fields differ from it —
    other than fields waiting for the push (changed in Batchly since the base, in a field the push sends: an edit of
    a field QuickBooks owns is never sent, so it counts) or for review (an open conflict). Set-based: the
    organisations' rows are read together, a statement per thousand rows."""

    def page(conn: Connection, organizations: Organizations, after: int, limit: int) -> list[dict[str, Any]]:
        return reconciled_rows(conn, kind, organizations, after, limit)

    outcomes = _outcomes(organization_ids)
    if not outcomes:
        return outcomes
    with engine.connect() as conn:
        held = open_conflict_fields(conn, list(outcomes), kind.entity_type)
    for rows in _chunks(engine, page, list(outcomes)):
        for row in rows:
            outcome = outcomes[row["organization_id"]]
            outcome.checked += 1
            batchly, qbo = kind.mapping.from_row(row), kind.mapping.from_qbo(row["data"])
            base = decode_snapshot(kind.entity_type, row["base"])
            drifted = [
                name
                for name in kind.mapping.fields
                if batchly[name] != qbo[name]
                and (batchly[name] == base.get(name) or kind.policy.rule_for(name) is Rule.QBO_OWNS)
                and name not in held.get(row["id"], ())
            ]
            if drifted:
                outcome.fail({"id": row["id"], "qbo_id": row["qbo_id"], "fields": drifted})
    return outcomes


def open_conflicts(engine: Engine, organization_id: int) -> dict[str, int]:
    """Conflicts waiting for review, counted per entity type."""
    with engine.connect() as conn:
        return count_open(conn, organization_id)


def invoice_totals(engine: Engine, organization_id: int) -> CheckOutcome:
    """:func:`invoices_totals` of one organisation."""
    return invoices_totals(engine, [organization_id])[organization_id]


def invoices_totals(engine: Engine, organization_ids: Sequence[int]) -> dict[int, CheckOutcome]:
    """Per organisation: linked invoices whose Batchly total differs from QuickBooks' ``TotalAmt`` (voided ones are
    zero there); the organisations' invoices read together."""
    outcomes = _outcomes(organization_ids)
    if not outcomes:
        return outcomes
    for rows in _chunks(engine, linked_totals, list(outcomes)):
        for row in rows:
            outcome = outcomes[row["organization_id"]]
            outcome.checked += 1
            qbo_total = to_money(row["data"].get("TotalAmt", 0))
            if row["total_amount"] != qbo_total and not _voided(row["data"]):
                outcome.fail(
                    {"id": row["id"], "batchly": str(row["total_amount"]), "quickbooks": str(qbo_total)}
                )
    return outcomes


def _voided(invoice: Mapping[str, Any]) -> bool:
    return to_money(invoice.get("TotalAmt", 0)) == Decimal(0) and str(
        invoice.get("PrivateNote") or ""
    ).startswith("Voided")


def payment_status(engine: Engine, organization_id: int, today: date) -> CheckOutcome:
    """:func:`payments_status` of one organisation on ``today``."""
    return payments_status(engine, {organization_id: today})[organization_id]


def payments_status(engine: Engine, today: Mapping[int, date]) -> dict[int, CheckOutcome]:
    """Per organisation (``today`` in each organisation's zone, by organisation): linked invoices reconciled with
    their QuickBooks twin's current mirror version (``payment_mirror_version`` equal to ``qbo_mirror.version``: no
    clocks compared) whose payment columns differ from what the mirrored invoice and payments say. The invoices of
    every organisation are read together; the mirrored payments and refund receipts they name are loaded per
    organisation present in a chunk."""
    outcomes = _outcomes(list(today))
    if not outcomes:
        return outcomes
    refunds: dict[int, RefundIndex] = {}
    for rows in _chunks(engine, reconciled_payments, list(outcomes)):
        by_org: dict[int, list[dict[str, Any]]] = {}
        for row in rows:
            by_org.setdefault(row["organization_id"], []).append(row)
        for org, org_rows in by_org.items():
            with engine.connect() as conn:
                if org not in refunds:
                    refunds[org] = RefundIndex.load(conn, org)
                facts = MirroredFacts.load(conn, org, [r["data"] for r in org_rows], refunds[org])
            outcome = outcomes[org]
            for row in org_rows:
                outcome.checked += 1
                expected = facts.columns(row["data"], today[org])
                wrong = {key: str(row[key]) for key, value in expected.items() if row[key] != value}
                if wrong:
                    outcome.fail({"id": row["id"], "qbo_id": row["qbo_id"], **wrong})
    return outcomes


def unstored_records(engine: Engine, organization_id: int, entity: str) -> CheckOutcome:
    """:func:`unstored_by_organization` of one organisation."""
    return unstored_by_organization(engine, [organization_id], entity)[organization_id]


def unstored_by_organization(
    engine: Engine, organization_ids: Sequence[int], entity: str
) -> dict[int, CheckOutcome]:
    """Per organisation: the QuickBooks records of ``entity`` (Customer, Item, Invoice) the pull could not store in
    Batchly, each failed value an example naming the record and the field (``pull_errors``); two statements for
    every organisation."""
    outcomes = _outcomes(organization_ids)
    with engine.connect() as conn:
        listed = errors_by_organization(conn, list(outcomes), entity, limit=EXAMPLES)
    for org, (failed, errors) in listed.items():
        outcome = CheckOutcome(checked=failed)
        for error in errors:
            outcome.fail(
                {
                    "entity": error["entity_type"],
                    "qbo_id": error["qbo_id"],
                    "batchly_id": error["entity_id"],
                    "field": error["field"],
                    "problem": error["message"],
                }
            )
        outcome.failed = failed
        outcomes[org] = outcome
    return outcomes
