"""The rate limiter learns each realm's budget: ``qbo_rate_realms.budget`` and ``qbo_rate_requests.admitted_at``.

``budget`` holds what the limiter learned the company takes (JSON; ``NULL``: Intuit's documented numbers), shared by
every process; ``admitted_at`` tells the requests sent before the limiter reacted to a 429 from those sent after.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-09 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("qbo_rate_realms", sa.Column("budget", sa.JSON))
    op.add_column("qbo_rate_requests", sa.Column("admitted_at", sa.Float, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("qbo_rate_requests") as batch:
        batch.drop_column("admitted_at")
    with op.batch_alter_table("qbo_rate_realms") as batch:
        batch.drop_column("budget")
