"""The refresh token's hard expiry: ``qbo_connections.refresh_token_hard_expires_at``.

Intuit caps a grant's refresh tokens at 5 years from consent (``x_refresh_token_hard_expires_in``); unlike the rolling
100-day ``refresh_token_expires_at`` no refresh moves it, so ``connections_healthy`` warns 30 days ahead.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 02:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("qbo_connections", sa.Column("refresh_token_hard_expires_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("qbo_connections") as batch:
        batch.drop_column("refresh_token_hard_expires_at")
