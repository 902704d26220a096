"""One push per QuickBooks company at a time, whatever started it (``qbo_push_locks``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 22:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "qbo_push_locks",
        sa.Column("realm_id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("organization_id", sa.Integer, nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("realm_id", name=op.f("pk_qbo_push_locks")),
    )


def downgrade() -> None:
    op.drop_table("qbo_push_locks")
