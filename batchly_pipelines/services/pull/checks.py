"""Consistency checks of the pull, read-only over the mirror and Batchly (the Dagster asset checks call these).

Each returns the number of records that fail and a few of them as examples.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.rules.mapping import decode_snapshot, to_money
from batchly_pipelines.rules.merge import Resolution
from batchly_pipelines.services.pull.invoice_payments import (
    PAYMENT_COLUMNS,
    expected_columns,
    linked_ids,
    mirrored_payments,
)
from batchly_pipelines.services.pull.reconcile import EntityKind
from batchly_pipelines.store import schema as s

m, st, inv, sc = s.qbo_mirror.c, s.qbo_sync_state.c, s.invoices.c, s.sync_conflicts.c
CHUNK = 1000
EXAMPLES = 10


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


def _chunks(
    engine: Engine, query: sa.Select[Any], key: sa.ColumnElement[Any]
) -> Iterator[list[dict[str, Any]]]:
    """Rows of ``query`` in chunks, by keyset on the integer column ``key``."""
    after = 0
    while True:
        with engine.connect() as conn:
            rows = [
                dict(r) for r in conn.execute(query.where(key > after).order_by(key).limit(CHUNK)).mappings()
            ]
        if not rows:
            return
        yield rows
        after = rows[-1]["id"]


def record_drift(engine: Engine, kind: EntityKind, organization_id: int) -> CheckOutcome:
    """Linked records reconciled with QuickBooks' current version whose fields differ from it — other than fields
    waiting for the push (changed in Batchly since the base) or for review (an open conflict)."""
    t = kind.table.c
    query = (
        sa.select(kind.table, st.base, m.data)
        .join(s.qbo_sync_state, sa.and_(st.entity_type == kind.entity, st.entity_id == t.id))
        .join(
            s.qbo_mirror,
            sa.and_(
                m.organization_id == t.organization_id,
                m.entity_type == kind.qbo_entity,
                m.qbo_id == st.qbo_id,
                m.sync_token == st.sync_token,
            ),
        )
        .where(t.organization_id == organization_id, m.deleted.is_(False))
    )
    with engine.connect() as conn:
        held = set(
            conn.execute(
                sa.select(sc.entity_id, sc.field).where(
                    sc.organization_id == organization_id,
                    sc.entity_type == kind.entity,
                    sc.resolution == Resolution.PENDING_REVIEW.value,
                )
            ).all()
        )
    outcome = CheckOutcome()
    for rows in _chunks(engine, query, t.id):
        for row in rows:
            outcome.checked += 1
            batchly, qbo = kind.mapping.from_row(row), kind.mapping.from_qbo(row["data"])
            base = decode_snapshot(kind.entity, row["base"])
            drifted = [
                name
                for name in kind.mapping.fields
                if batchly[name] != qbo[name]
                and batchly[name] == base.get(name)
                and (row["id"], name) not in held
            ]
            if drifted:
                outcome.fail({"id": row["id"], "qbo_id": row["qbo_id"], "fields": drifted})
    return outcome


def open_conflicts(engine: Engine, organization_id: int) -> dict[str, int]:
    """Conflicts waiting for review, counted per entity type."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(sc.entity_type, sa.func.count())
            .where(sc.organization_id == organization_id, sc.resolution == Resolution.PENDING_REVIEW.value)
            .group_by(sc.entity_type)
        ).all()
    return {entity: count for entity, count in rows}


def _linked_invoices(organization_id: int, *columns: sa.ColumnElement[Any]) -> sa.Select[Any]:
    return (
        sa.select(inv.id, inv.qbo_id, *columns, m.data)
        .join(
            s.qbo_mirror,
            sa.and_(
                m.organization_id == inv.organization_id, m.entity_type == "Invoice", m.qbo_id == inv.qbo_id
            ),
        )
        .where(inv.organization_id == organization_id, m.deleted.is_(False))
    )


def invoice_totals(engine: Engine, organization_id: int) -> CheckOutcome:
    """Linked invoices whose Batchly total differs from QuickBooks' ``TotalAmt`` (voided ones are zero there)."""
    outcome = CheckOutcome()
    query = _linked_invoices(organization_id, inv.total_amount).where(inv.status != "void")
    for rows in _chunks(engine, query, inv.id):
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
    query = _linked_invoices(organization_id, *(inv[c] for c in PAYMENT_COLUMNS)).where(
        inv.payment_mirror_version == m.version
    )
    for rows in _chunks(engine, query, inv.id):
        with engine.connect() as conn:
            payments = mirrored_payments(
                conn, organization_id, (pid for r in rows for pid in linked_ids(r["data"], "Payment"))
            )
        for row in rows:
            outcome.checked += 1
            expected = expected_columns(row["data"], payments, today)
            wrong = {key: str(row[key]) for key, value in expected.items() if row[key] != value}
            if wrong:
                outcome.fail({"id": row["id"], "qbo_id": row["qbo_id"], **wrong})
    return outcome
