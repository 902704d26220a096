"""What the per-company full reconciliation reads of Batchly (every customer, item and invoice of one organisation,
with their links and what explains a difference) and the two writes its repairs make.

The repairs: a field QuickBooks wins is written into Batchly in the caller's sync transaction (no echo), with the
link's base moved to it; a record whose Batchly value must reach QuickBooks is *touched* in an ordinary transaction
(an UPDATE of one watched column to itself), so the outbox trigger queues its push like any app edit would.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batchly_pipelines.store import schema as s
from batchly_pipelines.store.push_rows import TABLES

st, q, c, e = s.qbo_sync_state.c, s.sync_queue.c, s.sync_conflicts.c, s.pull_errors.c

# the watched column an UPDATE touches to queue a record's push (any column of the outbox trigger's list would do)
TOUCHED_COLUMN = {"customer": "display_name", "item": "name", "invoice": "status"}


def records_with_links(conn: Connection, entity_type: str, organization_id: int) -> list[dict[str, Any]]:
    """Every ``customer`` or ``item`` row of the organisation, linked or not, with its link's ``base`` and
    ``sync_token`` (None when unlinked), by id.

    Two scans joined here rather than a SQL join: right after a large import the planner's statistics still say the
    tables are empty, and its nested loop over them took 40 s for 10,000 customers."""
    table = TABLES[entity_type]
    t = table.c
    links = {
        entity_id: (base, sync_token)
        for entity_id, base, sync_token in conn.execute(
            sa.select(st.entity_id, st.base, st.sync_token).where(
                st.organization_id == organization_id, st.entity_type == entity_type
            )
        )
    }
    rows = conn.execute(
        sa.select(table).where(t.organization_id == organization_id).order_by(t.id)
    ).mappings()
    found = []
    for row in rows:
        base, sync_token = links.get(row["id"], (None, None))
        found.append({**row, "link_base": base, "link_sync_token": sync_token})
    return found


def invoices_with_customers(conn: Connection, organization_id: int) -> list[dict[str, Any]]:
    """Every invoice of the organisation with its customer's QuickBooks id (``customer_qbo_id``), by id."""
    i, cu = s.invoices.c, s.customers.c
    query = (
        sa.select(s.invoices, cu.qbo_id.label("customer_qbo_id"))
        .join(s.customers, cu.id == i.customer_id)
        .where(i.organization_id == organization_id)
        .order_by(i.id)
    )
    return [dict(r) for r in conn.execute(query).mappings()]


def invoice_lines_by_invoice(conn: Connection, organization_id: int) -> dict[int, list[dict[str, Any]]]:
    """Every invoice line of the organisation by invoice id, in ``line_no`` order, each with its item's QuickBooks
    id (``item_qbo_id``; items read in a scan of their own, as :func:`records_with_links` does)."""
    il, i, it = s.invoice_lines.c, s.invoices.c, s.items.c
    items = dict(conn.execute(sa.select(it.id, it.qbo_id).where(it.organization_id == organization_id)).all())
    query = (
        sa.select(s.invoice_lines)
        .join(s.invoices, i.id == il.invoice_id)
        .where(i.organization_id == organization_id)
        .order_by(il.invoice_id, il.line_no)
    )
    found: dict[int, list[dict[str, Any]]] = {}
    for row in conn.execute(query).mappings():
        found.setdefault(row["invoice_id"], []).append({**row, "item_qbo_id": items.get(row["item_id"])})
    return found


def invoice_sends_by_doc(
    conn: Connection, organization_id: int, realm_id: str
) -> dict[str, list[dict[str, Any]]]:
    """Every DocNumber the organisation's invoices were ever sent to ``realm_id`` with (``qbo_invoice_sends``), by
    ``doc_key``: invoice_id, doc_number, customer_qbo_id — what tells an invoice Batchly's push created from one
    QuickBooks' users made."""
    sends = s.qbo_invoice_sends.c
    query = (
        sa.select(sends.doc_key, sends.invoice_id, sends.doc_number, sends.customer_qbo_id)
        .where(sends.organization_id == organization_id, sends.realm_id == realm_id)
        .order_by(sends.doc_key, sends.first_sent_at, sends.invoice_id)
    )
    found: dict[str, list[dict[str, Any]]] = {}
    for row in conn.execute(query).mappings():
        found.setdefault(row["doc_key"], []).append(dict(row))
    return found


def open_conflicts(conn: Connection, organization_id: int) -> list[dict[str, Any]]:
    """The organisation's conflicts waiting for review: id, entity_type, entity_id, qbo_id, field."""
    query = sa.select(c.id, c.entity_type, c.entity_id, c.qbo_id, c.field).where(
        c.organization_id == organization_id, c.resolution == "pending_review"
    )
    return [dict(r) for r in conn.execute(query.order_by(c.id)).mappings()]


def listed_pull_errors(conn: Connection, organization_id: int) -> list[dict[str, Any]]:
    """The pull's error list of the organisation: QuickBooks entity and id, Batchly id, field, message."""
    query = sa.select(e.entity_type, e.qbo_id, e.entity_id, e.field, e.message).where(
        e.organization_id == organization_id
    )
    return [dict(r) for r in conn.execute(query.order_by(e.id)).mappings()]


def unfinished_pushes(conn: Connection, organization_id: int) -> list[dict[str, Any]]:
    """Queue rows of the organisation not done (pending, in progress, dead): id, entity_type, entity_id, status,
    last_error, oldest first."""
    query = sa.select(q.id, q.entity_type, q.entity_id, q.status, q.last_error).where(
        q.organization_id == organization_id, q.status != "done"
    )
    return [dict(r) for r in conn.execute(query.order_by(q.id)).mappings()]


def take_values(
    conn: Connection,
    entity_type: str,
    entity_id: int,
    values: Mapping[str, Any],
    seen: Mapping[str, Any],
    base: Mapping[str, Any],
) -> bool:
    """Write ``values`` into one Batchly row — only if each of those columns still holds what was read (``seen``, the
    stored values), so an edit committed meanwhile is never overwritten — and store ``base`` (encoded) as its link's
    base, in the caller's (sync) transaction; ``updated_at`` is left alone (it means "changed in Batchly"). False
    (nothing written) when the row changed."""
    table = TABLES[entity_type]
    unchanged = [table.c[column].is_not_distinct_from(seen[column]) for column in values]
    written = conn.execute(
        sa.update(table)
        .where(table.c.id == entity_id, *unchanged)
        .values({**values, "updated_at": table.c.updated_at})
    ).rowcount
    if not written:
        return False
    move_base(conn, entity_type, entity_id, base)
    return True


def locked_bases(
    conn: Connection, entity_type: str, organization_id: int, entity_ids: list[int]
) -> dict[int, dict[str, Any]]:
    """The link bases of these records, locked until the caller's transaction ends (``FOR UPDATE`` on PostgreSQL;
    SQLite's transactions are exclusive already), so a base built from them overwrites no concurrent move."""
    if not entity_ids:
        return {}
    query = (
        sa.select(st.entity_id, st.base)
        .where(
            st.organization_id == organization_id,
            st.entity_type == entity_type,
            st.entity_id.in_(sorted(entity_ids)),
        )
        .order_by(st.entity_id)
        .with_for_update()
    )
    return {entity_id: dict(base or {}) for entity_id, base in conn.execute(query)}


def move_base(conn: Connection, entity_type: str, entity_id: int, base: Mapping[str, Any]) -> None:
    """Store ``base`` (encoded) as the link's base of one record, in the caller's transaction."""
    conn.execute(
        sa.update(s.qbo_sync_state)
        .where(st.entity_type == entity_type, st.entity_id == entity_id)
        .values(base=dict(base))
    )


def queue_pushes(conn: Connection, entity_type: str, entity_ids: list[int]) -> int:
    """Queue a push of each record through the outbox trigger (an UPDATE of a watched column to itself); call it in
    an ordinary transaction, never a sync one (whose writes the trigger skips). Returns the rows touched."""
    if not entity_ids:
        return 0
    table = TABLES[entity_type]
    column = TOUCHED_COLUMN[entity_type]
    touched = conn.execute(
        sa.update(table)
        .where(table.c.id.in_(entity_ids))
        .values({column: table.c[column], "updated_at": table.c.updated_at})
    )
    return int(touched.rowcount)
