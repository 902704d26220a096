"""Payment status of Batchly invoices from the mirrored QuickBooks invoices and payments (DESIGN.md §1: QuickBooks
is the truth), and the daily local re-derivation of "overdue" without any QuickBooks call.

An invoice is examined when its mirrored QuickBooks invoice has another ``qbo_mirror.version`` than the one its
payment columns were derived from (``invoices.payment_mirror_version``), so a second run over the same mirror examines
nothing. The version is read with the invoice's data in one row and compared for equality, never a time: a mirror row
committed after a concurrent reconciliation read the older one keeps a version that reconciliation did not record, and
is examined next time.

An invoice deleted in QuickBooks (mirror row flagged deleted) has no payment there any more: its payment columns are
settled as for a voided invoice — nothing paid, nothing due, no payment, status ``voided`` — and the Batchly invoice
itself stays.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchly_pipelines.rules.payments import (
    ZERO,
    PaymentState,
    PaymentStatus,
    overdue_status,
    payment_facts_from_qbo,
    payment_state,
    today_in,
)
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.db import sync_transaction
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines.store.sync_state import LogEntry, write_log

m, inv = s.qbo_mirror.c, s.invoices.c
CHUNK = 1000
PAYMENT_COLUMNS = ("amount_paid", "amount_due", "payment_status", "payment_date", "qb_payment_id")
# an invoice QuickBooks deleted: no payment applies to it any more, nothing is owed there (as for a void)
DELETED_IN_QUICKBOOKS = PaymentState(ZERO, ZERO, PaymentStatus.VOIDED, None, None)


def linked_ids(obj: Mapping[str, Any], txn_type: str) -> list[str]:
    """Ids of the ``txn_type`` transactions an invoice or payment links to (header and line ``LinkedTxn``)."""
    links = list(obj.get("LinkedTxn") or [])
    for line in obj.get("Line") or []:
        links += line.get("LinkedTxn") or []
    return list(dict.fromkeys(str(link["TxnId"]) for link in links if link.get("TxnType") == txn_type))


@dataclass
class PaymentStats:
    """What one payment reconciliation did."""

    examined: int = 0
    updated: int = 0
    overdue_changes: int = 0
    duration_s: float = 0.0


def organization_today(conn: Connection, organization_id: int, now: datetime | None = None) -> date:
    """Today's date in the organisation's time zone."""
    tz = conn.execute(
        sa.select(s.organizations.c.timezone).where(s.organizations.c.id == organization_id)
    ).scalar_one()
    return today_in(tz, now or utcnow())


def reconcile_payments(
    engine: Engine, organization_id: int, *, now: datetime | None = None, run_id: str | None = None
) -> PaymentStats:
    """Write QuickBooks' payment facts into the invoices they changed for, then re-derive overdue for the day."""
    started = time.monotonic()
    now = now or utcnow()
    stats = PaymentStats()
    with engine.connect() as conn:
        today = organization_today(conn, organization_id, now)
    after = 0
    while True:
        with sync_transaction(engine) as conn:
            rows = [dict(r) for r in conn.execute(_pending(organization_id, after)).mappings()]
            if not rows:
                break
            payments = mirrored_payments(
                conn,
                organization_id,
                (pid for r in rows if not r["deleted"] for pid in linked_ids(r["data"], "Payment")),
            )
            log: list[LogEntry] = []
            for row in rows:
                if row["deleted"]:
                    columns = DELETED_IN_QUICKBOOKS.as_columns()
                else:
                    columns = expected_columns(row["data"], payments, today)
                changed = {key: value for key, value in columns.items() if row[key] != value}
                conn.execute(
                    sa.update(s.invoices)
                    .where(inv.id == row["id"])
                    .values(
                        **changed,
                        last_payment_sync_at=now,
                        payment_mirror_version=row["version"],
                        updated_at=inv.updated_at,
                    )
                )
                if changed:
                    stats.updated += 1
                    log.append(
                        LogEntry(
                            organization_id,
                            "pull",
                            "invoice",
                            "payment",
                            "ok",
                            row["id"],
                            row["qbo_id"],
                            f"{row['payment_status']} → {columns['payment_status']}, due {columns['amount_due']}",
                            run_id,
                        )
                    )
            write_log(conn, log)
        stats.examined += len(rows)
        after = rows[-1]["id"]
    stats.overdue_changes = refresh_overdue(engine, organization_id, today)
    stats.duration_s = round(time.monotonic() - started, 3)
    return stats


def expected_columns(
    invoice: Mapping[str, Any], payments: Mapping[str, Mapping[str, Any]], today: date
) -> dict[str, Any]:
    """The payment columns a Batchly invoice should have for a QuickBooks invoice and the payments (by id) it lists."""
    linked = [payments[pid] for pid in linked_ids(invoice, "Payment") if pid in payments]
    return payment_state(payment_facts_from_qbo(invoice, linked), today=today).as_columns()


def _pending(organization_id: int, after: int) -> sa.Select[Any]:
    """Linked invoices whose QuickBooks twin (live or deleted) has a mirror version they were not reconciled with."""
    return (
        sa.select(inv.id, inv.qbo_id, *(inv[c] for c in PAYMENT_COLUMNS), m.data, m.deleted, m.version)
        .join(
            s.qbo_mirror,
            sa.and_(
                m.organization_id == inv.organization_id, m.entity_type == "Invoice", m.qbo_id == inv.qbo_id
            ),
        )
        .where(
            inv.organization_id == organization_id,
            inv.id > after,
            sa.or_(inv.payment_mirror_version.is_(None), inv.payment_mirror_version != m.version),
        )
        .order_by(inv.id)
        .limit(CHUNK)
    )


def mirrored_payments(
    conn: Connection, organization_id: int, ids: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """Mirrored live payments by id."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    query = sa.select(m.qbo_id, m.data).where(
        m.organization_id == organization_id,
        m.entity_type == "Payment",
        m.deleted.is_(False),
        m.qbo_id.in_(wanted),
    )
    return {qbo_id: dict(data) for qbo_id, data in conn.execute(query).all()}


def refresh_overdue(engine: Engine, organization_id: int, today: date) -> int:
    """Re-derive overdue from each invoice's own columns for ``today`` (no QuickBooks call); returns changes."""
    candidates = sa.select(inv.id, inv.payment_status, inv.total_amount, inv.amount_due, inv.due_date).where(
        inv.organization_id == organization_id,
        inv.amount_due.is_not(None),
        sa.or_(
            sa.and_(
                inv.payment_status.in_([PaymentStatus.UNPAID, PaymentStatus.PARTIAL]),
                inv.amount_due > 0,
                inv.due_date < today,
            ),
            sa.and_(
                inv.payment_status == PaymentStatus.OVERDUE,
                sa.or_(inv.due_date.is_(None), inv.due_date >= today, inv.amount_due <= 0),
            ),
        ),
    )
    changed = 0
    with sync_transaction(engine) as conn:
        for row in conn.execute(candidates).all():
            status = overdue_status(
                current_status=row.payment_status,
                total_amount=row.total_amount,
                amount_due=row.amount_due,
                due_date=row.due_date,
                today=today,
            )
            if status != row.payment_status:
                conn.execute(
                    sa.update(s.invoices)
                    .where(inv.id == row.id)
                    .values(payment_status=status.value, updated_at=inv.updated_at)
                )
                changed += 1
    return changed
