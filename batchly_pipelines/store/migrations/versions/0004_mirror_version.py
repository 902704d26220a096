"""A version token on mirror rows, and on invoices the mirror version their payment columns were derived from.

The payment reconciliation re-examines an invoice when its mirrored QuickBooks invoice has another version than the
one it reconciled, instead of comparing ``pulled_at`` with ``last_payment_sync_at`` (two client-clock stamps, which
miss a mirror row committed after a concurrent reconciliation read the invoice). Existing invoices have no recorded
version, so each is examined once more after the upgrade.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 10:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("qbo_mirror", sa.Column("version", sa.String(32), nullable=False, server_default="0"))
    # plain ADD COLUMN (no table rebuild): the outbox triggers on invoices stay in place
    op.add_column("invoices", sa.Column("payment_mirror_version", sa.String(32), nullable=True))


def downgrade() -> None:
    op.drop_column("invoices", "payment_mirror_version")
    op.drop_column("qbo_mirror", "version")
