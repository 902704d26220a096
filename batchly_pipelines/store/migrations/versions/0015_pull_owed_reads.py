"""What a payments pull owes a re-read (``qbo_owed_reads``): the invoices, and the payments whose invoices, that a
refund receipt or a payment the pull mirrored (or recorded deleted) affects. Written in the same transaction as the
mirror row, cleared in the same transaction as the re-read invoices are stored, so a pull interrupted in between
leaves them for the next one.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 22:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "qbo_owed_reads",
        sa.Column("organization_id", sa.Integer, nullable=False),
        sa.Column("entity_type", sa.String(16), nullable=False),
        sa.Column("qbo_id", sa.String(32), nullable=False),
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("noted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_qbo_owed_reads_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", "entity_type", "qbo_id", name=op.f("pk_qbo_owed_reads")),
    )


def downgrade() -> None:
    op.drop_table("qbo_owed_reads")
