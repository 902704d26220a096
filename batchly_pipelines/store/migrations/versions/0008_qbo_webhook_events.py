"""The webhook inbox ``qbo_webhook_events``: every event Intuit delivered, once, until a pull has taken it in.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "qbo_webhook_events",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("realm_id", sa.String(32), nullable=False),
        sa.Column("entity_type", sa.String(32), nullable=False),
        sa.Column("entity_id", sa.String(32), nullable=False),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True)),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(8), nullable=False, server_default="pending"),
        sa.Column("note", sa.String(200)),
        sa.Column("run_id", sa.String(64)),
        sa.Column("processed_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "status IN ('pending', 'done', 'ignored')", name=op.f("ck_qbo_webhook_events_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qbo_webhook_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_qbo_webhook_events_event_id")),
    )
    op.create_index(
        op.f("ix_qbo_webhook_events_status_realm_id_id"), "qbo_webhook_events", ["status", "realm_id", "id"]
    )
    op.create_index(op.f("ix_qbo_webhook_events_run_id"), "qbo_webhook_events", ["run_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_qbo_webhook_events_run_id"), table_name="qbo_webhook_events")
    op.drop_index(op.f("ix_qbo_webhook_events_status_realm_id_id"), table_name="qbo_webhook_events")
    op.drop_table("qbo_webhook_events")
