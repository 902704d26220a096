"""QuickBooks rate limits shared across processes: a per-realm lock row and the requests of the sliding windows.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 08:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "qbo_rate_realms",
        sa.Column("realm_id", sa.String(length=32), nullable=False),
        sa.Column("paused_until", sa.Float(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("realm_id", name=op.f("pk_qbo_rate_realms")),
    )
    op.create_table(
        "qbo_rate_requests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("realm_id", sa.String(length=32), nullable=False),
        sa.Column("is_batch", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("sent_at", sa.Float(), nullable=False),
        sa.Column("in_flight_until", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qbo_rate_requests")),
    )
    op.create_index(
        op.f("ix_qbo_rate_requests_realm_id_sent_at"),
        "qbo_rate_requests",
        ["realm_id", "sent_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_qbo_rate_requests_realm_id_sent_at"), table_name="qbo_rate_requests")
    op.drop_table("qbo_rate_requests")
    op.drop_table("qbo_rate_realms")
