"""Small builders of Batchly rows for tests (the app's own writes: they go through the outbox triggers)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batchly_pipelines.store import schema as s


def _insert(conn: Connection, table: sa.Table, **values: Any) -> int:
    key = conn.execute(sa.insert(table).values(**values)).inserted_primary_key
    assert key is not None
    return int(key[0])


def organization(conn: Connection, name: str = "Acme Ltd", timezone: str = "UTC") -> int:
    return _insert(conn, s.organizations, name=name, timezone=timezone)


def customer(conn: Connection, org: int, display_name: str = "Zoë O'Brien", **values: Any) -> int:
    return _insert(conn, s.customers, organization_id=org, display_name=display_name, **values)


def item(conn: Connection, org: int, name: str = "Widget", unit_price: str = "10.10", **values: Any) -> int:
    return _insert(conn, s.items, organization_id=org, name=name, unit_price=Decimal(unit_price), **values)


def invoice(
    conn: Connection, org: int, customer_id: int, item_id: int, doc_number: str = "1001", lines: int = 2
) -> int:
    """An open invoice with ``lines`` lines of 2 x 10.10 each, dated a month ago and due in a month (never overdue
    whatever day the suite runs)."""
    today = date.today()
    invoice_id = _insert(
        conn,
        s.invoices,
        organization_id=org,
        customer_id=customer_id,
        doc_number=doc_number,
        txn_date=today - timedelta(days=30),
        due_date=today + timedelta(days=30),
        total_amount=Decimal("20.20") * lines,
    )
    for line_no in range(1, lines + 1):
        _insert(
            conn,
            s.invoice_lines,
            invoice_id=invoice_id,
            line_no=line_no,
            item_id=item_id,
            quantity=Decimal(2),
            unit_price=Decimal("10.10"),
            amount=Decimal("20.20"),
        )
    return invoice_id


def correction(conn: Connection, original_id: int, doc_number: str) -> int:
    """What the app does to correct an invoice: a new invoice replacing it (``replaces_invoice_id``), with the same
    customer, dates and lines except one more of the first line's item."""
    original = conn.execute(sa.select(s.invoices).where(s.invoices.c.id == original_id)).mappings().one()
    lines = list(
        conn.execute(
            sa.select(s.invoice_lines)
            .where(s.invoice_lines.c.invoice_id == original_id)
            .order_by(s.invoice_lines.c.line_no)
        ).mappings()
    )
    copies = [
        {key: line[key] for key in ("line_no", "item_id", "description", "quantity", "unit_price", "amount")}
        for line in lines
    ]
    first = copies[0]
    first["quantity"] += 1
    first["amount"] = (first["quantity"] * first["unit_price"]).quantize(Decimal("0.01"), ROUND_HALF_UP)
    keep = ("organization_id", "customer_id", "sales_order_id", "txn_date", "due_date")
    invoice_id = _insert(
        conn,
        s.invoices,
        **{key: original[key] for key in keep},
        doc_number=doc_number,
        total_amount=sum((line["amount"] for line in copies), Decimal("0.00")),
        replaces_invoice_id=original_id,
    )
    for line in copies:
        _insert(conn, s.invoice_lines, invoice_id=invoice_id, **line)
    return invoice_id


def queue_rows(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(sa.select(s.sync_queue).order_by(s.sync_queue.c.id)).mappings()]
