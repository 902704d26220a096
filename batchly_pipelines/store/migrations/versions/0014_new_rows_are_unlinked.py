"""A new Batchly customer, item or invoice is never linked: on SQLite, whose rowids are reused after the row with the
largest id is deleted, a trigger drops the link (``qbo_sync_state``) a deleted record left behind under the id the new
row takes — or the push would update the deleted record's QuickBooks twin with the new record's values.

PostgreSQL never reuses an id (its sequences only move on), so nothing is installed there.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 03:05:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

TABLES = {"customers": "customer", "items": "item", "invoices": "invoice"}


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table, entity_type in TABLES.items():
        op.execute(
            f"CREATE TRIGGER {table}_unlinked_insert AFTER INSERT ON {table} FOR EACH ROW BEGIN "
            f"DELETE FROM qbo_sync_state WHERE organization_id = NEW.organization_id "
            f"AND entity_type = '{entity_type}' AND entity_id = NEW.id; END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_unlinked_insert")
