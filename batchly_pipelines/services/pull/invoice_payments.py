"""Payment status of Batchly invoices from the mirrored QuickBooks invoices and payments (DESIGN.md §1: QuickBooks
is the truth), and the daily local re-derivation of "overdue" without any QuickBooks call.

An invoice is examined when its mirrored QuickBooks invoice has another ``qbo_mirror.version`` than the one its
payment columns were derived from (``invoices.payment_mirror_version``), so a second run over the same mirror examines
nothing. The version is read with the invoice's data in one row and compared for equality, never a time: a mirror row
committed after a concurrent reconciliation read the older one keeps a version that reconciliation did not record, and
is examined next time.

An invoice deleted in QuickBooks (mirror row flagged deleted, or a tombstone when it was deleted before any pull
mirrored it) has no payment there any more: its payment columns are settled as for a voided invoice — nothing paid,
nothing due, no payment, status ``voided`` — and the Batchly invoice itself stays.

Credits and refunds come from the mirror too: the payments an invoice lists (their credit memo lines), and the refund
receipts that name the invoice or one of its payments (:mod:`batchly_pipelines.rules.payments`). Payment columns a
Batchly invoice cannot hold (an amount beyond ``NUMERIC(12,2)``) are not written: the invoice goes to the pull's
error list (``pull_errors``), naming the field, and is tried again next time; every other invoice is written.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from batchly_pipelines.rules.payments import (
    ZERO,
    PaymentState,
    PaymentStatus,
    RefundTargets,
    overdue_status,
    payment_facts_from_qbo,
    payment_state,
    refund_targets,
    today_in,
)
from batchly_pipelines.rules.storage import unstorable
from batchly_pipelines.store.db import Connection, Engine, sync_transaction
from batchly_pipelines.store.invoice_payments import (
    overdue_candidates,
    set_payment_status,
    unreconciled_payments,
    write_payment_columns,
)
from batchly_pipelines.store.mirror import mirrored_objects, mirrored_payments
from batchly_pipelines.store.organizations import organization_timezone
from batchly_pipelines.store.pull_errors import PullError, clear_errors, record_errors
from batchly_pipelines.store.records import column_rules
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines.store.sync_state import LogEntry, write_log

CHUNK = 1000
# an invoice QuickBooks deleted: no payment applies to it any more, nothing is owed there (as for a void)
DELETED_IN_QUICKBOOKS = PaymentState(ZERO, ZERO, PaymentStatus.VOIDED, None, None)
INVOICE_COLUMNS = column_rules("invoice")


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
    errors: int = 0  # invoices whose payment columns Batchly cannot hold (listed in pull_errors)
    duration_s: float = 0.0


class RefundIndex:
    """The organisation's live mirrored refund receipts, by each invoice or payment they name."""

    def __init__(self, refunds: Iterable[Mapping[str, Any]]) -> None:
        self.by_target: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
        for refund in refunds:
            for target in dict.fromkeys(refund_targets(refund)):
                self.by_target[target].append(refund)

    @classmethod
    def load(cls, conn: Connection, organization_id: int) -> RefundIndex:
        """Every live refund receipt in the organisation's mirror."""
        return cls(mirrored_objects(conn, organization_id, "RefundReceipt").values())

    def for_invoice(self, invoice: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """The refund receipts naming the invoice or a payment it lists, each once."""
        targets = [("Invoice", str(invoice["Id"]))] + [
            ("Payment", pid) for pid in linked_ids(invoice, "Payment")
        ]
        found = {str(refund["Id"]): refund for target in targets for refund in self.by_target.get(target, [])}
        return list(found.values())


@dataclass
class MirroredFacts:
    """What the mirror knows beyond some invoices themselves: the payments they list, the refund receipts that name
    them, and the other invoices and payments those receipts name."""

    payments: Mapping[str, Mapping[str, Any]]
    refunds: RefundIndex
    targets: RefundTargets

    @classmethod
    def load(
        cls,
        conn: Connection,
        organization_id: int,
        invoices: Sequence[Mapping[str, Any]],
        refunds: RefundIndex,
    ) -> MirroredFacts:
        """The facts of ``invoices`` (live QuickBooks invoices as mirrored), in a few queries."""
        named = [
            target
            for invoice in invoices
            for r in refunds.for_invoice(invoice)
            for target in refund_targets(r)
        ]
        named_payments = {txn_id for txn_type, txn_id in named if txn_type == "Payment"}
        listed = {pid for invoice in invoices for pid in linked_ids(invoice, "Payment")}
        payments = mirrored_payments(conn, organization_id, listed | named_payments)
        named_invoices = {txn_id for txn_type, txn_id in named if txn_type == "Invoice"}
        targets = RefundTargets(
            mirrored_objects(conn, organization_id, "Invoice", named_invoices),
            {pid: payments[pid] for pid in named_payments if pid in payments},
        )
        return cls(payments, refunds, targets)

    def columns(self, invoice: Mapping[str, Any], today: date) -> dict[str, Any]:
        """The payment columns a Batchly invoice should have for this QuickBooks invoice."""
        linked = [self.payments[pid] for pid in linked_ids(invoice, "Payment") if pid in self.payments]
        facts = payment_facts_from_qbo(invoice, linked, self.refunds.for_invoice(invoice), self.targets)
        return payment_state(facts, today=today).as_columns()


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
    with engine.connect() as conn:
        refunds = RefundIndex.load(conn, organization_id)
    while True:
        with sync_transaction(engine) as conn:
            rows = unreconciled_payments(conn, organization_id, after, CHUNK)
            if not rows:
                break
            facts = MirroredFacts.load(
                conn, organization_id, [r["data"] for r in rows if not r["deleted"]], refunds
            )
            log: list[LogEntry] = []
            errors: list[PullError] = []
            for row in rows:
                if row["deleted"]:
                    columns = DELETED_IN_QUICKBOOKS.as_columns()
                else:
                    columns = facts.columns(row["data"], today)
                problems = unstorable(columns, INVOICE_COLUMNS)
                if problems:  # not written, nor its mirror version recorded: tried again next time
                    errors += [
                        PullError(
                            organization_id,
                            "Invoice",
                            row["qbo_id"],
                            name,
                            f"{name} {why}",
                            row["id"],
                            run_id,
                        )
                        for name, why in problems.items()
                    ]
                    continue
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
            failed = {error.qbo_id for error in errors}
            clear_errors(
                conn, organization_id, "Invoice", (r["qbo_id"] for r in rows if r["qbo_id"] not in failed)
            )
            record_errors(conn, errors)
            write_log(conn, log)
        stats.examined += len(rows)
        stats.errors += len(failed)
        after = rows[-1]["id"]
    stats.overdue_changes = refresh_overdue(engine, organization_id, today)
    stats.duration_s = round(time.monotonic() - started, 3)
    return stats


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
