"""Initial schema: Batchly's tables, the sync tables and the outbox triggers.

Revision ID: 0001
Revises:
Create Date: 2026-11-21 08:27:59.707436
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from batchly_pipelines.store import outbox

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organizations")),
    )
    op.create_table(
        "sync_write_marker",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_write_marker")),
    )
    op.create_table(
        "customers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("display_name", sa.String(length=500), nullable=False),
        sa.Column("company_name", sa.String(length=500), nullable=True),
        sa.Column("given_name", sa.String(length=100), nullable=True),
        sa.Column("family_name", sa.String(length=100), nullable=True),
        sa.Column("email", sa.String(length=100), nullable=True),
        sa.Column("phone", sa.String(length=30), nullable=True),
        sa.Column("bill_line1", sa.String(length=500), nullable=True),
        sa.Column("bill_city", sa.String(length=255), nullable=True),
        sa.Column("bill_region", sa.String(length=255), nullable=True),
        sa.Column("bill_postal_code", sa.String(length=30), nullable=True),
        sa.Column("bill_country", sa.String(length=255), nullable=True),
        sa.Column("notes", sa.String(length=2000), nullable=True),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("qbo_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_customers_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customers")),
        sa.UniqueConstraint("organization_id", "qbo_id", name=op.f("uq_customers_organization_id_qbo_id")),
    )
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_customers_organization_id_display_name"),
            ["organization_id", "display_name"],
            unique=False,
        )

    op.create_table(
        "items",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("sku", sa.String(length=100), nullable=True),
        sa.Column("description", sa.String(length=4000), nullable=True),
        sa.Column("unit_price", sa.Numeric(precision=12, scale=2), server_default="0", nullable=False),
        sa.Column("item_type", sa.String(length=20), server_default="Service", nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("qbo_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_items_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_items")),
        sa.UniqueConstraint("organization_id", "qbo_id", name=op.f("uq_items_organization_id_qbo_id")),
    )
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_items_organization_id_name"), ["organization_id", "name"], unique=False
        )

    op.create_table(
        "qbo_connections",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("realm_id", sa.String(length=32), nullable=False),
        sa.Column("environment", sa.String(length=12), nullable=False),
        sa.Column("base_url", sa.String(length=255), nullable=False),
        sa.Column("access_token_enc", sa.Text(), nullable=True),
        sa.Column("refresh_token_enc", sa.Text(), nullable=True),
        sa.Column("access_token_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refresh_token_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("token_version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("status", sa.String(length=16), server_default="connected", nullable=False),
        sa.Column("status_reason", sa.String(length=1000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_qbo_connections_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qbo_connections")),
        sa.UniqueConstraint(
            "organization_id", "realm_id", name=op.f("uq_qbo_connections_organization_id_realm_id")
        ),
    )
    op.create_table(
        "qbo_mirror",
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("entity_type", sa.String(length=16), nullable=False),
        sa.Column("qbo_id", sa.String(length=32), nullable=False),
        sa.Column("sync_token", sa.String(length=16), nullable=False),
        sa.Column("last_updated_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("pulled_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_qbo_mirror_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", "entity_type", "qbo_id", name=op.f("pk_qbo_mirror")),
    )
    with op.batch_alter_table("qbo_mirror", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_qbo_mirror_organization_id_entity_type_last_updated_time"),
            ["organization_id", "entity_type", "last_updated_time"],
            unique=False,
        )

    op.create_table(
        "qbo_sync_state",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("entity_type", sa.String(length=16), nullable=False),
        sa.Column("entity_id", sa.Integer(), nullable=False),
        sa.Column("qbo_id", sa.String(length=32), nullable=False),
        sa.Column("sync_token", sa.String(length=16), nullable=False),
        sa.Column("base", sa.JSON(), nullable=False),
        sa.Column("qbo_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_qbo_sync_state_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qbo_sync_state")),
        sa.UniqueConstraint(
            "organization_id",
            "entity_type",
            "entity_id",
            name=op.f("uq_qbo_sync_state_organization_id_entity_type_entity_id"),
        ),
        sa.UniqueConstraint(
            "organization_id",
            "entity_type",
            "qbo_id",
            name=op.f("uq_qbo_sync_state_organization_id_entity_type_qbo_id"),
        ),
    )
    op.create_table(
        "sync_conflicts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("entity_type", sa.String(length=16), nullable=False),
        sa.Column("entity_id", sa.Integer(), nullable=True),
        sa.Column("qbo_id", sa.String(length=32), nullable=True),
        sa.Column("field", sa.String(length=64), nullable=False),
        sa.Column("base_value", sa.JSON(), nullable=True),
        sa.Column("batchly_value", sa.JSON(), nullable=True),
        sa.Column("qbo_value", sa.JSON(), nullable=True),
        sa.Column("batchly_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("qbo_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolution", sa.String(length=16), nullable=False),
        sa.Column("resolved_value", sa.JSON(), nullable=True),
        sa.Column("resolved_by", sa.String(length=200), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_sync_conflicts_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_conflicts")),
    )
    with op.batch_alter_table("sync_conflicts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sync_conflicts_organization_id_resolution"),
            ["organization_id", "resolution"],
            unique=False,
        )

    op.create_table(
        "sync_cursors",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_sync_cursors_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_cursors")),
        sa.UniqueConstraint("organization_id", "name", name=op.f("uq_sync_cursors_organization_id_name")),
    )
    op.create_table(
        "sync_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(length=4), nullable=False),
        sa.Column("entity_type", sa.String(length=16), nullable=False),
        sa.Column("entity_id", sa.Integer(), nullable=True),
        sa.Column("qbo_id", sa.String(length=32), nullable=True),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=8), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_sync_log_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_log")),
    )
    with op.batch_alter_table("sync_log", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sync_log_organization_id_created_at"),
            ["organization_id", "created_at"],
            unique=False,
        )

    op.create_table(
        "sync_queue",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("entity_type", sa.String(length=16), nullable=False),
        sa.Column("entity_id", sa.Integer(), nullable=False),
        sa.Column("operation", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=12), server_default="pending", nullable=False),
        sa.Column("change_count", sa.Integer(), server_default="1", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'in_progress', 'done', 'dead')", name=op.f("ck_sync_queue_status")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_sync_queue_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_queue")),
    )
    with op.batch_alter_table("sync_queue", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sync_queue_organization_id_status"), ["organization_id", "status"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_sync_queue_status_next_attempt_at_id"),
            ["status", "next_attempt_at", "id"],
            unique=False,
        )
        batch_op.create_index(
            "uq_sync_queue_pending_entity",
            ["entity_type", "entity_id"],
            unique=True,
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        )

    op.create_table(
        "sales_orders",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("order_number", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="open", nullable=False),
        sa.Column("delivery_date", sa.Date(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_sales_orders_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_sales_orders_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sales_orders")),
        sa.UniqueConstraint(
            "organization_id", "order_number", name=op.f("uq_sales_orders_organization_id_order_number")
        ),
    )
    op.create_table(
        "invoices",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("sales_order_id", sa.Integer(), nullable=True),
        sa.Column("doc_number", sa.String(length=21), nullable=False),
        sa.Column("txn_date", sa.Date(), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=True),
        sa.Column("total_amount", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("status", sa.String(length=10), server_default="open", nullable=False),
        sa.Column("replaces_invoice_id", sa.Integer(), nullable=True),
        sa.Column("qbo_id", sa.String(length=32), nullable=True),
        sa.Column("sync_status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("amount_paid", sa.Numeric(precision=12, scale=2), server_default="0", nullable=False),
        sa.Column("amount_due", sa.Numeric(precision=12, scale=2), nullable=True),
        sa.Column("payment_status", sa.String(length=10), server_default="unpaid", nullable=False),
        sa.Column("payment_date", sa.Date(), nullable=True),
        sa.Column("qb_payment_id", sa.String(length=32), nullable=True),
        sa.Column("last_payment_sync_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_invoices_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_invoices_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["replaces_invoice_id"], ["invoices.id"], name=op.f("fk_invoices_replaces_invoice_id_invoices")
        ),
        sa.ForeignKeyConstraint(
            ["sales_order_id"], ["sales_orders.id"], name=op.f("fk_invoices_sales_order_id_sales_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
        sa.UniqueConstraint(
            "organization_id", "doc_number", name=op.f("uq_invoices_organization_id_doc_number")
        ),
        sa.UniqueConstraint("organization_id", "qbo_id", name=op.f("uq_invoices_organization_id_qbo_id")),
    )
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_invoices_organization_id_payment_status_due_date"),
            ["organization_id", "payment_status", "due_date"],
            unique=False,
        )

    op.create_table(
        "sales_order_lines",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sales_order_id", sa.Integer(), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(length=4000), nullable=True),
        sa.Column("quantity", sa.Numeric(precision=12, scale=4), nullable=False),
        sa.Column("quantity_invoiced", sa.Numeric(precision=12, scale=4), server_default="0", nullable=False),
        sa.Column("unit_price", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name=op.f("fk_sales_order_lines_item_id_items")),
        sa.ForeignKeyConstraint(
            ["sales_order_id"],
            ["sales_orders.id"],
            name=op.f("fk_sales_order_lines_sales_order_id_sales_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sales_order_lines")),
        sa.UniqueConstraint(
            "sales_order_id", "line_no", name=op.f("uq_sales_order_lines_sales_order_id_line_no")
        ),
    )
    op.create_table(
        "invoice_lines",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(length=4000), nullable=True),
        sa.Column("quantity", sa.Numeric(precision=12, scale=4), nullable=False),
        sa.Column("unit_price", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("amount", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_invoice_lines_invoice_id_invoices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name=op.f("fk_invoice_lines_item_id_items")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_lines")),
        sa.UniqueConstraint("invoice_id", "line_no", name=op.f("uq_invoice_lines_invoice_id_line_no")),
    )
    for statement in outbox.create_statements(op.get_bind().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    for statement in outbox.drop_statements(op.get_bind().dialect.name):
        op.execute(statement)
    op.drop_table("invoice_lines")
    op.drop_table("sales_order_lines")
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invoices_organization_id_payment_status_due_date"))

    op.drop_table("invoices")
    op.drop_table("sales_orders")
    with op.batch_alter_table("sync_queue", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_sync_queue_pending_entity",
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        )
        batch_op.drop_index(batch_op.f("ix_sync_queue_status_next_attempt_at_id"))
        batch_op.drop_index(batch_op.f("ix_sync_queue_organization_id_status"))

    op.drop_table("sync_queue")
    with op.batch_alter_table("sync_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sync_log_organization_id_created_at"))

    op.drop_table("sync_log")
    op.drop_table("sync_cursors")
    with op.batch_alter_table("sync_conflicts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sync_conflicts_organization_id_resolution"))

    op.drop_table("sync_conflicts")
    op.drop_table("qbo_sync_state")
    with op.batch_alter_table("qbo_mirror", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_qbo_mirror_organization_id_entity_type_last_updated_time"))

    op.drop_table("qbo_mirror")
    op.drop_table("qbo_connections")
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_items_organization_id_name"))

    op.drop_table("items")
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customers_organization_id_display_name"))

    op.drop_table("customers")
    op.drop_table("sync_write_marker")
    op.drop_table("organizations")
