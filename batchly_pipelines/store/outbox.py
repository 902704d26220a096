"""Outbox triggers: the app's writes to customers, items and invoices enqueue into ``sync_queue``.

The triggers run inside the app's own transaction, so a committed write always has its queue row and a rolled-back
write never does. One pending row per record (a partial unique index) coalesces repeated edits. Writes made inside
:func:`batchly_pipelines.store.db.sync_transaction` are skipped: that is the echo suppression.

Sales orders have no trigger: they never sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from batchly_pipelines.store.schema import sync_queue, utcnow


@dataclass(frozen=True)
class OutboxSource:
    """A table whose writes enqueue a record of ``entity_type``."""

    table: str
    entity_type: str
    events: tuple[str, ...]  # INSERT / UPDATE / DELETE
    watched_columns: tuple[str, ...]  # UPDATE fires only when one of these is in the SET list
    entity_id: str  # expression over the row alias ``{row}``
    organization_id: str
    from_where: str = "WHERE true"  # FROM/WHERE that yields the row to enqueue (none: nothing is enqueued)


CUSTOMER_COLUMNS = (
    "display_name", "company_name", "given_name", "family_name", "email", "phone", "bill_line1", "bill_city",
    "bill_region", "bill_postal_code", "bill_country", "notes", "is_active",
)  # fmt: skip
ITEM_COLUMNS = ("name", "sku", "description", "unit_price", "item_type", "is_active")
INVOICE_COLUMNS = (
    "customer_id", "doc_number", "txn_date", "due_date", "total_amount", "status", "replaces_invoice_id",
)  # fmt: skip
INVOICE_LINE_COLUMNS = ("invoice_id", "line_no", "item_id", "description", "quantity", "unit_price", "amount")

SOURCES: tuple[OutboxSource, ...] = (
    OutboxSource(
        "customers", "customer", ("INSERT", "UPDATE"), CUSTOMER_COLUMNS, "{row}.id", "{row}.organization_id"
    ),
    OutboxSource("items", "item", ("INSERT", "UPDATE"), ITEM_COLUMNS, "{row}.id", "{row}.organization_id"),
    OutboxSource(
        "invoices", "invoice", ("INSERT", "UPDATE"), INVOICE_COLUMNS, "{row}.id", "{row}.organization_id"
    ),
    # a line edit re-queues its invoice, so an invoice and its lines written together make one queue row
    OutboxSource(
        "invoice_lines",
        "invoice",
        ("INSERT", "UPDATE", "DELETE"),
        INVOICE_LINE_COLUMNS,
        "{row}.invoice_id",
        "invoices.organization_id",
        # the invoice is gone when its lines are deleted by its own cascade: then there is nothing to push
        "FROM invoices WHERE invoices.id = {row}.invoice_id",
    ),
)

_ENQUEUE = """INSERT INTO sync_queue (organization_id, entity_type, entity_id, operation, status, change_count,
        attempts, next_attempt_at, enqueued_at, updated_at)
    SELECT {org}, '{entity_type}', {entity_id}, '{operation}', 'pending', 1, 0, {now}, {now}, {now} {from_where}
    ON CONFLICT (entity_type, entity_id) WHERE status = 'pending'
    DO UPDATE SET change_count = sync_queue.change_count + 1, updated_at = excluded.updated_at"""

_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
_SKIP_SYNC_WRITES = "NOT EXISTS (SELECT 1 FROM sync_write_marker)"


def _trigger_name(source: OutboxSource, event: str | None = None) -> str:
    return f"{source.table}_outbox" + (f"_{event.lower()}" if event else "")


def _enqueue_sql(source: OutboxSource, event: str, now: str) -> str:
    row = "OLD" if event == "DELETE" else "NEW"
    return _ENQUEUE.format(
        org=source.organization_id.format(row=row),
        entity_type=source.entity_type,
        entity_id=source.entity_id.format(row=row),
        from_where=source.from_where.format(row=row),
        operation="insert" if event == "INSERT" and source.entity_id == "{row}.id" else "update",
        now=now,
    )


def _event_clause(source: OutboxSource, event: str) -> str:
    return f"UPDATE OF {', '.join(source.watched_columns)}" if event == "UPDATE" else event


def create_statements(dialect: str) -> list[str]:
    """DDL that installs every outbox trigger on ``dialect`` ('sqlite' or 'postgresql')."""
    statements: list[str] = []
    for source in SOURCES:
        if dialect == "sqlite":
            statements += [
                f"CREATE TRIGGER {_trigger_name(source, event)} AFTER {_event_clause(source, event)} "
                f"ON {source.table} FOR EACH ROW WHEN {_SKIP_SYNC_WRITES}\n"
                f"BEGIN\n    {_enqueue_sql(source, event, _SQLITE_NOW)};\nEND"
                for event in source.events
            ]
        elif dialect == "postgresql":
            branches = "\n".join(
                f"    IF TG_OP = '{event}' THEN\n        {_enqueue_sql(source, event, 'now()')};\n    END IF;"
                for event in source.events
            )
            function = f"{_trigger_name(source)}_fn"
            statements += [
                f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
                f"    IF {_SKIP_SYNC_WRITES} THEN\n{branches}\n    END IF;\n    RETURN NULL;\nEND\n$$",
                f"CREATE TRIGGER {_trigger_name(source)} AFTER "
                f"{' OR '.join(_event_clause(source, e) for e in source.events)} ON {source.table} "
                f"FOR EACH ROW EXECUTE FUNCTION {function}()",
            ]
        else:
            raise ValueError(f"outbox triggers are not available for the {dialect!r} dialect")
    return statements


def drop_statements(dialect: str) -> list[str]:
    """DDL that removes every outbox trigger installed by :func:`create_statements`."""
    statements: list[str] = []
    for source in SOURCES:
        if dialect == "sqlite":
            statements += [
                f"DROP TRIGGER IF EXISTS {_trigger_name(source, event)}" for event in source.events
            ]
        else:
            statements += [
                f"DROP TRIGGER IF EXISTS {_trigger_name(source)} ON {source.table}",
                f"DROP FUNCTION IF EXISTS {_trigger_name(source)}_fn()",
            ]
    return statements


def enqueue_updates(
    conn: Connection, organization_id: int, entity_type: str, entity_ids: Sequence[int]
) -> None:
    """Queue a push of these records in the caller's (sync) transaction, as an app write would: for what a merge
    decided QuickBooks must take when no app write queued it (a QuickBooks edit of a field Batchly owns, a first
    link Batchly wins). A record already waiting keeps its one pending row."""
    if not entity_ids:
        return
    now = utcnow()
    rows = [
        {
            "organization_id": organization_id,
            "entity_type": entity_type,
            "entity_id": entity_id,
            "operation": "update",
            "status": "pending",
            "change_count": 1,
            "attempts": 0,
            "next_attempt_at": now,
            "enqueued_at": now,
            "updated_at": now,
        }
        for entity_id in entity_ids
    ]
    insert = sqlite_insert if conn.dialect.name == "sqlite" else postgresql_insert
    statement = insert(sync_queue)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["entity_type", "entity_id"],
            # a literal, not a bound value: SQLite renders a bound one at execution, which executemany refuses
            index_where=sync_queue.c.status == sa.literal_column("'pending'"),
            set_={
                "change_count": sync_queue.c.change_count + 1,
                "updated_at": statement.excluded.updated_at,
            },
        ),
        rows,
    )
