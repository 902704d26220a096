"""PostgreSQL: what an INSERT into ``customers`` or ``items`` makes the outbox and the field-change log do runs once
per statement, over the rows it inserted (a transition table), instead of one PL/pgSQL call per row.

An import inserts its records a thousand at a time; the two row triggers (0001's outbox, 0013's field changes) cost
every one of them two PL/pgSQL calls, an existence test of ``sync_write_marker`` and an index probe of
``batchly_field_changes`` — about 14 µs a row, 1.4 CPU-seconds of the database's per 100,000 records. The same
work, set-based, per statement: an app insert still enqueues one ``insert`` per record (not for the sync's own
writes, the marker decides as before); an insert still forgets the field changes a former record of its id left.
The row triggers keep their names and functions and fire on ``UPDATE OF`` the same columns only (a statement-level
trigger with a transition table cannot name columns). SQLite keeps its row triggers (it has no other kind).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03 14:30:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# table, entity type, the columns whose UPDATE fires the row triggers (store.outbox's, as 0001 and 0013 installed)
_TABLES = (
    (
        "customers",
        "customer",
        "display_name, company_name, given_name, family_name, email, phone, bill_line1, bill_city, bill_region, "
        "bill_postal_code, bill_country, notes, is_active",
    ),
    ("items", "item", "name, sku, description, unit_price, item_type, is_active"),
)


def _upgrade_table(table: str, entity_type: str, columns: str) -> list[str]:
    return [
        f"DROP TRIGGER {table}_outbox ON {table}",
        f"CREATE TRIGGER {table}_outbox AFTER UPDATE OF {columns} ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {table}_outbox_fn()",
        f"CREATE FUNCTION {table}_outbox_insert_fn() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
        "    IF NOT EXISTS (SELECT 1 FROM sync_write_marker) THEN\n"
        "        INSERT INTO sync_queue (organization_id, entity_type, entity_id, operation, status, change_count,\n"
        "            attempts, next_attempt_at, enqueued_at, updated_at)\n"
        f"        SELECT inserted.organization_id, '{entity_type}', inserted.id, 'insert', 'pending', 1, 0, now(),"
        " now(), now()\n"
        "        FROM inserted ORDER BY inserted.id\n"
        "        ON CONFLICT (entity_type, entity_id) WHERE status = 'pending'\n"
        "        DO UPDATE SET change_count = sync_queue.change_count + 1, updated_at = excluded.updated_at;\n"
        "    END IF;\n    RETURN NULL;\nEND\n$$",
        f"CREATE TRIGGER {table}_outbox_insert AFTER INSERT ON {table} REFERENCING NEW TABLE AS inserted "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_outbox_insert_fn()",
        f"DROP TRIGGER {table}_field_changes ON {table}",
        f"CREATE TRIGGER {table}_field_changes AFTER UPDATE OF {columns} ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {table}_field_changes_fn()",
        f"CREATE FUNCTION {table}_field_changes_insert_fn() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
        f"    DELETE FROM batchly_field_changes f USING inserted WHERE f.entity_type = '{entity_type}'"
        " AND f.entity_id = inserted.id;\n"
        "    RETURN NULL;\nEND\n$$",
        f"CREATE TRIGGER {table}_field_changes_insert AFTER INSERT ON {table} REFERENCING NEW TABLE AS inserted "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_field_changes_insert_fn()",
    ]


def _downgrade_table(table: str, columns: str) -> list[str]:
    return [
        f"DROP TRIGGER {table}_outbox_insert ON {table}",
        f"DROP FUNCTION {table}_outbox_insert_fn()",
        f"DROP TRIGGER {table}_outbox ON {table}",
        f"CREATE TRIGGER {table}_outbox AFTER INSERT OR UPDATE OF {columns} ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {table}_outbox_fn()",
        f"DROP TRIGGER {table}_field_changes_insert ON {table}",
        f"DROP FUNCTION {table}_field_changes_insert_fn()",
        f"DROP TRIGGER {table}_field_changes ON {table}",
        f"CREATE TRIGGER {table}_field_changes AFTER INSERT OR UPDATE OF {columns} ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {table}_field_changes_fn()",
    ]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, entity_type, columns in _TABLES:
        for statement in _upgrade_table(table, entity_type, columns):
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, _, columns in _TABLES:
        for statement in _downgrade_table(table, columns):
            op.execute(statement)
