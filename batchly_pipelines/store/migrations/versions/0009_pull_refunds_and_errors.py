"""Refunds and credits on invoices (``amount_refunded``, ``amount_credited``) and the pull's error list
(``pull_errors``).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

MONEY = sa.Numeric(12, 2, asdecimal=True)


def upgrade() -> None:
    # plain ADD COLUMN on both dialects (no SQLite table rebuild, so the invoices' outbox triggers stay)
    op.add_column("invoices", sa.Column("amount_credited", MONEY, nullable=False, server_default="0"))
    op.add_column("invoices", sa.Column("amount_refunded", MONEY, nullable=False, server_default="0"))
    op.create_table(
        "pull_errors",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("organization_id", sa.Integer, nullable=False),
        sa.Column("entity_type", sa.String(16), nullable=False),
        sa.Column("qbo_id", sa.String(32), nullable=False),
        sa.Column("entity_id", sa.Integer),
        sa.Column("field", sa.String(64), nullable=False),
        sa.Column("message", sa.String(1000), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_pull_errors_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pull_errors")),
        sa.UniqueConstraint(
            "organization_id",
            "entity_type",
            "qbo_id",
            "field",
            name=op.f("uq_pull_errors_organization_id_entity_type_qbo_id_field"),
        ),
    )


def downgrade() -> None:
    op.drop_table("pull_errors")
    op.drop_column("invoices", "amount_refunded")
    op.drop_column("invoices", "amount_credited")
