"""The Batchly rows a push reads (customers, items, invoices and their lines) and the columns it writes back.

Reads take the caller's connection, so a push reads a chunk's rows together; :func:`write_back` runs in the caller's
transaction (the push's checkpoint, one :func:`~batchly_pipelines.store.db.sync_transaction`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batchly_pipelines.store import schema as s

TABLES: Mapping[str, sa.Table] = {"customer": s.customers, "item": s.items, "invoice": s.invoices}


def load_rows(conn: Connection, entity_type: str, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Batchly rows of ``entity_type`` by id (missing ids are left out)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    table = TABLES[entity_type]
    rows = conn.execute(sa.select(table).where(table.c.id.in_(wanted))).mappings()
    return {row["id"]: dict(row) for row in rows}


def load_invoice_lines(conn: Connection, invoice_ids: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
    """The lines of each invoice, ordered by line number."""
    wanted = sorted(set(invoice_ids))
    lines: dict[int, list[dict[str, Any]]] = {invoice_id: [] for invoice_id in wanted}
    if wanted:
        il = s.invoice_lines.c
        query = (
            sa.select(s.invoice_lines).where(il.invoice_id.in_(wanted)).order_by(il.invoice_id, il.line_no)
        )
        for row in conn.execute(query).mappings():
            lines[row["invoice_id"]].append(dict(row))
    return lines


def load_replacements(conn: Connection, invoice_ids: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
    """The invoices that replace each of ``invoice_ids`` (corrections, by ``replaces_invoice_id``), in id order,
    with their ``id``, ``replaces_invoice_id``, ``status``, ``sync_status`` and ``qbo_id``; an invoice nothing
    replaces is left out."""
    inv = s.invoices.c
    query = sa.select(inv.id, inv.replaces_invoice_id, inv.status, inv.sync_status, inv.qbo_id).where(
        inv.replaces_invoice_id.in_(list(invoice_ids))
    )
    replacements: dict[int, list[dict[str, Any]]] = {}
    for row in conn.execute(query.order_by(inv.id)).mappings():
        replacements.setdefault(row["replaces_invoice_id"], []).append(dict(row))
    return replacements


def write_back(
    conn: Connection,
    entity_type: str,
    entity_id: int,
    values: Mapping[str, Any],
    merged: Mapping[str, Any] | None = None,
    read: Mapping[str, Any] | None = None,
) -> None:
    """Write a push's outcome (``qbo_id``, ``sync_status`` …) and the synced fields its merge took from QuickBooks
    (``merged``) to one Batchly row in the caller's transaction. ``None`` in ``values`` is left out; in ``merged``
    it is written: a value cleared in QuickBooks is cleared in Batchly. A merged column whose value the push read
    (``read``) is written only while the row still holds it, decided in the UPDATE itself: an app edit committed
    after the push read the row stands (it is pushed next). Nothing is written when nothing is left. ``updated_at``
    moves as on any update (the column's ``onupdate``), as the push has always done."""
    read = read or {}
    changes: dict[str, Any] = {name: value for name, value in values.items() if value is not None}
    if not changes and not merged:
        return  # also for a record without a table of its own here (a sales order sent to the dead letter)
    table = TABLES[entity_type]
    for name, value in (merged or {}).items():
        column = table.c[name]
        changes[name] = (
            sa.case((column.is_not_distinct_from(read[name]), value), else_=column) if name in read else value
        )
    if changes:
        conn.execute(sa.update(table).where(table.c.id == entity_id).values(**changes))
