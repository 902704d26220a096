"""Per-field change times of customers and items: ``batchly_field_changes`` and the triggers that fill it.

Newest-wins compares when *that field* changed on each side (``store/field_changes.py``). Rows edited before this
migration have no recorded change: their fields count as changed when the record was created.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 02:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from batchly_pipelines.store import field_changes

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batchly_field_changes",
        sa.Column("entity_type", sa.String(16), nullable=False),
        sa.Column("entity_id", sa.Integer, nullable=False),
        sa.Column("field", sa.String(64), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("entity_type", "entity_id", "field", name=op.f("pk_batchly_field_changes")),
    )
    for statement in field_changes.create_statements(op.get_bind().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    for statement in field_changes.drop_statements(op.get_bind().dialect.name):
        op.execute(statement)
    op.drop_table("batchly_field_changes")
