"""Helpers of the pull tests (and benchmarks)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.services.pull.mirror import Window
from batchly_pipelines.services.pull.organization import EPOCH, OrganizationPull, pull_organization
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.db import sync_transaction
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.support import factories
from batchly_pipelines_tests.support.sandbox_client import Qbo
from qbo_sandbox.server import SandboxServer


@dataclass
class Company:
    """A Batchly organisation connected to a fresh sandbox realm."""

    engine: Engine
    sandbox: SandboxServer
    org: int
    qbo: Qbo
    client: QuickBooksClient

    @staticmethod
    def window() -> Window:
        """One window over the whole history."""
        return Window(EPOCH, utcnow() + timedelta(days=1))

    def pull(self, **kwargs: Any) -> OrganizationPull:
        """Pull everything QuickBooks has and reconcile it."""
        return pull_organization(self.engine, self.client, self.org, self.window(), **kwargs)

    def act(self, action: str, **payload: Any) -> dict[str, Any]:
        """Act as the accountant in QuickBooks' UI."""
        return self.qbo.admin.action(self.qbo.realm_id, action, **payload)

    def row(self, table: sa.Table, **where: Any) -> dict[str, Any]:
        """The one Batchly row of ``table`` matching ``where``."""
        with self.engine.connect() as conn:
            query = sa.select(table).where(*(table.c[k] == v for k, v in where.items()))
            return dict(conn.execute(query).mappings().one())

    def rows(self, table: sa.Table) -> list[dict[str, Any]]:
        """Every row of ``table`` (ordered by its first key column)."""
        with self.engine.connect() as conn:
            key = next(iter(table.primary_key.columns))
            return [dict(r) for r in conn.execute(sa.select(table).order_by(key)).mappings()]


def link_invoices_as_pushed(
    engine: Engine, organization_id: int, invoices: Iterable[Mapping[str, Any]]
) -> None:
    """Batchly twins of QuickBooks invoices, linked as the push leaves them (sync writes: nothing is queued), with
    the QuickBooks invoice's item lines when Batchly has each line's item."""
    invoices = list(invoices)
    with engine.connect() as conn:
        customer_ids = dict(conn.execute(sa.select(s.customers.c.qbo_id, s.customers.c.id)).all())
        item_ids = dict(conn.execute(sa.select(s.items.c.qbo_id, s.items.c.id)).all())
    rows = [
        {
            "organization_id": organization_id,
            "customer_id": customer_ids[invoice["CustomerRef"]["value"]],
            "doc_number": invoice["DocNumber"],
            "txn_date": date.fromisoformat(invoice["TxnDate"]),
            "due_date": date.fromisoformat(invoice["DueDate"]) if invoice.get("DueDate") else None,
            "total_amount": Decimal(str(invoice["TotalAmt"])),
            "qbo_id": invoice["Id"],
            "sync_status": "synced",
        }
        for invoice in invoices
    ]
    with sync_transaction(engine) as conn:
        conn.execute(sa.insert(s.invoices), rows)
        ids = dict(
            conn.execute(
                sa.select(s.invoices.c.qbo_id, s.invoices.c.id).where(
                    s.invoices.c.organization_id == organization_id
                )
            ).all()
        )
        lines = []
        for invoice in invoices:
            sold = [
                line for line in invoice.get("Line", []) if line.get("DetailType") == "SalesItemLineDetail"
            ]
            if not sold or any(
                line["SalesItemLineDetail"]["ItemRef"]["value"] not in item_ids for line in sold
            ):
                continue
            for number, line in enumerate(sold, start=1):
                detail = line["SalesItemLineDetail"]
                amount = Decimal(str(line["Amount"]))
                lines.append(
                    {
                        "invoice_id": ids[invoice["Id"]],
                        "line_no": number,
                        "item_id": item_ids[detail["ItemRef"]["value"]],
                        "description": line.get("Description"),
                        "quantity": Decimal(str(detail.get("Qty", 1))),
                        "unit_price": Decimal(str(detail.get("UnitPrice", amount))),
                        "amount": amount,
                    }
                )
        if lines:
            conn.execute(sa.insert(s.invoice_lines), lines)


def queue(engine: Engine) -> list[dict[str, Any]]:
    """The sync queue (what would be pushed)."""
    with engine.connect() as conn:
        return factories.queue_rows(conn)


def open_conflicts(engine: Engine) -> list[dict[str, Any]]:
    """Conflicts waiting for review."""
    with engine.connect() as conn:
        query = sa.select(s.sync_conflicts).where(s.sync_conflicts.c.resolution == "pending_review")
        return [dict(r) for r in conn.execute(query.order_by(s.sync_conflicts.c.id)).mappings()]
