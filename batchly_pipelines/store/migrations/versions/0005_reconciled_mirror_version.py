"""The mirror version each QuickBooks customer and item was last reconciled at (``qbo_reconciled``).

Customer and item reconciliation examines the mirror rows whose ``qbo_mirror.version`` differs from the one it
recorded, instead of the rows whose ``pulled_at`` (a client-clock stamp taken before the pull commits) is past a
cursor, which missed a mirror row committed after a concurrent reconciliation began. The table starts empty, so every
existing mirror row is reconciled once more after the upgrade.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 10:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "qbo_reconciled",
        sa.Column("organization_id", sa.Integer, nullable=False),
        sa.Column("entity_type", sa.String(16), nullable=False),
        sa.Column("qbo_id", sa.String(32), nullable=False),
        sa.Column("mirror_version", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_qbo_reconciled_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", "entity_type", "qbo_id", name=op.f("pk_qbo_reconciled")),
    )


def downgrade() -> None:
    op.drop_table("qbo_reconciled")
