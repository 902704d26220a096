"""Per-field change times of customers and items (``batchly_field_changes`` and the triggers that fill it), and the
fields each organisation sends to review (``merge_review_fields``), for the pull and the push alike; and why a
conflict was reported and which revision of its values a review shows (``sync_conflicts.reason``, ``.revision``).

Newest-wins compares when *that field* changed on each side (``store/field_changes.py``). Rows edited before this
migration have no recorded change: their fields count as changed when the record was created. The triggers also
write to ``sync_conflicts``: a later migration that rebuilds ``customers``, ``items`` or ``sync_conflicts`` on SQLite
(``batch_alter_table``) drops them first and creates them again after, as ``downgrade`` does.

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
    op.add_column("sync_conflicts", sa.Column("reason", sa.String(16)))  # plain ADD COLUMN, no table rebuild
    op.add_column("sync_conflicts", sa.Column("revision", sa.Integer, nullable=False, server_default="1"))
    op.create_index(
        op.f("ix_sync_conflicts_entity_type_entity_id"), "sync_conflicts", ["entity_type", "entity_id"]
    )
    op.create_table(
        "merge_review_fields",
        sa.Column("organization_id", sa.Integer, nullable=False),
        sa.Column("entity_type", sa.String(16), nullable=False),
        sa.Column("field", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_merge_review_fields_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "organization_id", "entity_type", "field", name=op.f("pk_merge_review_fields")
        ),
    )


def downgrade() -> None:
    for statement in field_changes.drop_statements(op.get_bind().dialect.name):
        op.execute(statement)  # first: they write to sync_conflicts, which SQLite rebuilds below
    op.drop_index(op.f("ix_sync_conflicts_entity_type_entity_id"), table_name="sync_conflicts")
    with op.batch_alter_table("sync_conflicts") as batch:
        batch.drop_column("reason")
        batch.drop_column("revision")
    op.drop_table("merge_review_fields")
    op.drop_table("batchly_field_changes")
