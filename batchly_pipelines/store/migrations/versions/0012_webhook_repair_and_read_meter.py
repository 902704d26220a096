"""CDC repair and the read budget: ``qbo_webhook_realms``, ``qbo_webhook_receivers``, ``qbo_read_meter`` and an index of
the inbox by realm and arrival.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 02:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_qbo_webhook_events_realm_id_received_at"), "qbo_webhook_events", ["realm_id", "received_at"]
    )
    op.create_table(
        "qbo_webhook_realms",
        sa.Column("realm_id", sa.String(32), nullable=False),
        sa.Column("repaired_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("swept_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("gaps", sa.Integer, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("realm_id", name=op.f("pk_qbo_webhook_realms")),
    )
    op.create_table(
        "qbo_webhook_receivers",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("address", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qbo_webhook_receivers")),
    )
    op.create_index(op.f("ix_qbo_webhook_receivers_started_at"), "qbo_webhook_receivers", ["started_at"])
    op.create_table(
        "qbo_read_meter",
        sa.Column("app_id", sa.String(100), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("realm_id", sa.String(32), nullable=False),
        sa.Column("reads", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "month", "realm_id", name=op.f("pk_qbo_read_meter")),
    )


def downgrade() -> None:
    op.drop_table("qbo_read_meter")
    op.drop_index(op.f("ix_qbo_webhook_receivers_started_at"), table_name="qbo_webhook_receivers")
    op.drop_table("qbo_webhook_receivers")
    op.drop_table("qbo_webhook_realms")
    op.drop_index(op.f("ix_qbo_webhook_events_realm_id_received_at"), table_name="qbo_webhook_events")
