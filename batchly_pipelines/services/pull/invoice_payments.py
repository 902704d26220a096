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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from batchly_pipelines.rules.payments import (
    ZERO,
    PaymentState,
    PaymentStatus,
    overdue_status,
    payment_facts_from_qbo,
    payment_state,
    today_in,
)
from batchly_pipelines.store.db import Connection, Engine, sync_transaction
from batchly_pipelines.store.invoice_payments import (
    overdue_candidates,
    set_payment_status,
    unreconciled_payments,
    write_payment_columns,
)
from batchly_pipelines.store.mirror import mirrored_payments
from batchly_pipelines.store.organizations import organization_timezone
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines.store.sync_state import LogEntry, write_log

CHUNK = 1000
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
    return today_in(organization_timezone(conn, organization_id), now or utcnow())


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
            rows = unreconciled_payments(conn, organization_id, after, CHUNK)
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
                write_payment_columns(conn, row["id"], changed, synced_at=now, mirror_version=row["version"])
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


def refresh_overdue(engine: Engine, organization_id: int, today: date) -> int:
    """Re-derive overdue from each invoice's own columns for ``today`` (no QuickBooks call); returns changes."""
    changed = 0
    with sync_transaction(engine) as conn:
        for row in overdue_candidates(conn, organization_id, today):
            status = overdue_status(
                current_status=row["payment_status"],
                total_amount=row["total_amount"],
                amount_due=row["amount_due"],
                due_date=row["due_date"],
                today=today,
            )
            if status != row["payment_status"]:
                set_payment_status(conn, row["id"], status.value)
                changed += 1
    return changed
