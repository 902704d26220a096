"""Index the sync queue by record, for the claim's "no older unfinished row of the same record" rule.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 09:10:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

INDEX = "ix_sync_queue_entity_type_entity_id_status"


def upgrade() -> None:
    op.create_index(INDEX, "sync_queue", ["entity_type", "entity_id", "status"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="sync_queue")
