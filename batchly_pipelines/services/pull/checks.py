"""Consistency checks of the pull, read-only over the mirror and Batchly (the Dagster asset checks call these).

Each returns the number of records that fail and a few of them as examples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
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
from batchly_pipelines.store.pull_errors import count_errors, open_errors
from batchly_pipelines.store.records import reconciled_rows

CHUNK = 1000
EXAMPLES = 10

# (conn, organisation, after id, limit) → the organisation's next rows by id
Page = Callable[[Connection, int, int, int], list[dict[str, Any]]]


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


def _chunks(engine: Engine, page: Page, organization_id: int) -> Iterator[list[dict[str, Any]]]:
    """The rows ``page`` reads, in chunks by keyset on their integer ``id``, each read in its own connection."""
    after = 0
    while True:
        with engine.connect() as conn:
            rows = page(conn, organization_id, after, CHUNK)
        if not rows:
            return
        yield rows
        after = rows[-1]["id"]


def record_drift(engine: Engine, kind: NameList, organization_id: int) -> CheckOutcome:
    """Linked records reconciled with QuickBooks' current version whose fields differ from it — other than fields
    waiting for the push (changed in Batchly since the base, in a field the push sends: an edit of a field
    QuickBooks owns is never sent, so it counts) or for review (an open conflict)."""

    def page(conn: Connection, organization_id: int, after: int, limit: int) -> list[dict[str, Any]]:
        return reconciled_rows(conn, kind, organization_id, after, limit)

    with engine.connect() as conn:
        held = open_conflict_fields(conn, organization_id, kind.entity_type)
    outcome = CheckOutcome()
    for rows in _chunks(engine, page, organization_id):
        for row in rows:
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
    return outcome


def open_conflicts(engine: Engine, organization_id: int) -> dict[str, int]:
    """Conflicts waiting for review, counted per entity type."""
    with engine.connect() as conn:
        return count_open(conn, organization_id)


def invoice_totals(engine: Engine, organization_id: int) -> CheckOutcome:
    """Linked invoices whose Batchly total differs from QuickBooks' ``TotalAmt`` (voided ones are zero there)."""
    outcome = CheckOutcome()
    for rows in _chunks(engine, linked_totals, organization_id):
        for row in rows:
            outcome.checked += 1
            qbo_total = to_money(row["data"].get("TotalAmt", 0))
            if row["total_amount"] != qbo_total and not _voided(row["data"]):
                outcome.fail(
                    {"id": row["id"], "batchly": str(row["total_amount"]), "quickbooks": str(qbo_total)}
                )
    return outcome


def _voided(invoice: Mapping[str, Any]) -> bool:
    return to_money(invoice.get("TotalAmt", 0)) == Decimal(0) and str(
        invoice.get("PrivateNote") or ""
    ).startswith("Voided")


def payment_status(engine: Engine, organization_id: int, today: date) -> CheckOutcome:
    """Linked invoices reconciled with their QuickBooks twin's current mirror version (``payment_mirror_version``
    equal to ``qbo_mirror.version``: no clocks compared) whose payment columns differ from what the mirrored invoice
    and payments say."""
    outcome = CheckOutcome()
    with engine.connect() as conn:
        refunds = RefundIndex.load(conn, organization_id)
    for rows in _chunks(engine, reconciled_payments, organization_id):
        with engine.connect() as conn:
            facts = MirroredFacts.load(conn, organization_id, [r["data"] for r in rows], refunds)
        for row in rows:
            outcome.checked += 1
            expected = facts.columns(row["data"], today)
            wrong = {key: str(row[key]) for key, value in expected.items() if row[key] != value}
            if wrong:
                outcome.fail({"id": row["id"], "qbo_id": row["qbo_id"], **wrong})
    return outcome


def unstored_records(engine: Engine, organization_id: int, entity: str) -> CheckOutcome:
    """The QuickBooks records of ``entity`` (Customer, Item, Invoice) the pull could not store in Batchly, each
    failed value an example naming the record and the field (``pull_errors``)."""
    with engine.connect() as conn:
        failed = count_errors(conn, organization_id, entity)
        listed = open_errors(conn, organization_id, entity, limit=EXAMPLES)
    outcome = CheckOutcome(checked=failed)
    for error in listed:
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
    return outcome
