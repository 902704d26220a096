"""Every DocNumber an invoice was ever sent with, recorded before the send (``qbo_invoice_sends``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 23:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "qbo_invoice_sends",
        sa.Column("realm_id", sa.String(32), nullable=False),
        sa.Column("invoice_id", sa.Integer, nullable=False),
        sa.Column("doc_key", sa.String(64), nullable=False),
        sa.Column("customer_qbo_id", sa.String(32), nullable=False),
        sa.Column("doc_number", sa.String(32), nullable=False),
        sa.Column("organization_id", sa.Integer, nullable=False),
        sa.Column("first_sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "realm_id", "invoice_id", "doc_key", "customer_qbo_id", name=op.f("pk_qbo_invoice_sends")
        ),
    )


def downgrade() -> None:
    op.drop_table("qbo_invoice_sends")
