"""Every DocNumber an invoice was ever sent to QuickBooks with (``qbo_invoice_sends``), recorded before the send.

A create whose answer was lost leaves an invoice in QuickBooks that Batchly never recorded. Batchly still shows the
invoice unpushed, so it may be renumbered, voided or set to draft before the next push; the DocNumber guard then looks
up every DocNumber the invoice was sent with, not only the current one, and finds that copy. Rows are per QuickBooks
company, Batchly invoice and (DocNumber as QuickBooks compares it, customer); they are only ever added.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchly_pipelines.rules.invoices import doc_number_key
from batchly_pipelines.store.db import SHORT_TRANSACTION, bounded_transaction
from batchly_pipelines.store.schema import qbo_invoice_sends, utcnow
from batchly_pipelines.store.upsert import bulk_upsert

c = qbo_invoice_sends.c


@dataclass(frozen=True)
class InvoiceSend:
    """One way an invoice was sent: its DocNumber (as sent) and the QuickBooks customer it billed."""

    invoice_id: int
    doc_number: str
    customer_qbo_id: str

    @property
    def doc_key(self) -> str:
        """The DocNumber as QuickBooks compares it."""
        return doc_number_key(self.doc_number)


def record_sends(engine: Engine, realm_id: str, organization_id: int, sends: Iterable[InvoiceSend]) -> None:
    """Record, in a transaction of its own (bounded: see :func:`~batchly_pipelines.store.db.bound_transaction`) and
    before the creates leave the process, what they are sent with."""
    now = utcnow()
    rows = [
        {
            "realm_id": realm_id,
            "invoice_id": send.invoice_id,
            "doc_key": send.doc_key,
            "customer_qbo_id": send.customer_qbo_id,
            "doc_number": send.doc_number,
            "organization_id": organization_id,
            "first_sent_at": now,
        }
        for send in sends
    ]
    if rows:
        with bounded_transaction(engine, idle=SHORT_TRANSACTION, lock_wait=SHORT_TRANSACTION) as conn:
            bulk_upsert(
                conn,
                qbo_invoice_sends,
                rows,
                key=("realm_id", "invoice_id", "doc_key", "customer_qbo_id"),
                update=(),
            )


def load_sends(conn: Connection, realm_id: str, invoice_ids: Iterable[int]) -> dict[int, list[InvoiceSend]]:
    """What each of ``invoice_ids`` was ever sent to ``realm_id`` with (invoices never sent are left out)."""
    wanted = sorted(set(invoice_ids))
    sends: dict[int, list[InvoiceSend]] = {}
    if not wanted:
        return sends
    query = (
        sa.select(c.invoice_id, c.doc_number, c.customer_qbo_id)
        .where(c.realm_id == realm_id, c.invoice_id.in_(wanted))
        .order_by(c.invoice_id, c.first_sent_at, c.doc_key)
    )
    for row in conn.execute(query):
        sends.setdefault(row.invoice_id, []).append(
            InvoiceSend(row.invoice_id, row.doc_number, row.customer_qbo_id)
        )
    return sends
