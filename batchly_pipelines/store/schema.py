"""The Batchly database: the app's own tables and the tables the sync owns (DESIGN.md §3).

Money is ``NUMERIC(12,2)`` (``Decimal`` in Python). Times are UTC: ``UTCDateTime`` stores naive UTC on SQLite and
``timestamptz`` on PostgreSQL, and always hands back timezone-aware UTC datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend; naive values are refused."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: Batchly stores UTC instants only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    """The current instant, timezone-aware UTC."""
    return datetime.now(UTC)


Money = sa.Numeric(12, 2, asdecimal=True)
Quantity = sa.Numeric(12, 4, asdecimal=True)


def _pk() -> sa.Column[Any]:
    return sa.Column("id", sa.Integer, primary_key=True, autoincrement=True)


def _org_fk() -> sa.Column[Any]:
    return sa.Column(
        "organization_id", sa.Integer, sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
    )


def _timestamps() -> list[sa.Column[Any]]:
    return [
        sa.Column("created_at", UTCDateTime, nullable=False, default=utcnow),
        sa.Column("updated_at", UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow),
    ]


# --- Batchly's own tables -------------------------------------------------------------------------------------

organizations = sa.Table(
    "organizations",
    metadata,
    _pk(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False, server_default="UTC"),
    sa.Column("created_at", UTCDateTime, nullable=False, default=utcnow),
)

customers = sa.Table(
    "customers",
    metadata,
    _pk(),
    _org_fk(),
    sa.Column("display_name", sa.String(500), nullable=False),
    sa.Column("company_name", sa.String(500)),
    sa.Column("given_name", sa.String(100)),
    sa.Column("family_name", sa.String(100)),
    sa.Column("email", sa.String(100)),
    sa.Column("phone", sa.String(30)),
    sa.Column("bill_line1", sa.String(500)),
    sa.Column("bill_city", sa.String(255)),
    sa.Column("bill_region", sa.String(255)),
    sa.Column("bill_postal_code", sa.String(30)),
    sa.Column("bill_country", sa.String(255)),
    sa.Column("notes", sa.String(2000)),
    sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("qbo_id", sa.String(32)),
    *_timestamps(),
    sa.Index(None, "organization_id", "display_name"),
    sa.UniqueConstraint("organization_id", "qbo_id"),
)

items = sa.Table(
    "items",
    metadata,
    _pk(),
    _org_fk(),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("sku", sa.String(100)),
    sa.Column("description", sa.String(4000)),
    sa.Column("unit_price", Money, nullable=False, server_default="0"),
    sa.Column("item_type", sa.String(20), nullable=False, server_default="Service"),
    sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("qbo_id", sa.String(32)),
    *_timestamps(),
    sa.Index(None, "organization_id", "name"),
    sa.UniqueConstraint("organization_id", "qbo_id"),
)

sales_orders = sa.Table(
    "sales_orders",
    metadata,
    _pk(),
    _org_fk(),
    sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False),
    sa.Column("order_number", sa.String(40), nullable=False),
    sa.Column("status", sa.String(20), nullable=False, server_default="open"),
    sa.Column("delivery_date", sa.Date),
    *_timestamps(),
    sa.UniqueConstraint("organization_id", "order_number"),
)

sales_order_lines = sa.Table(
    "sales_order_lines",
    metadata,
    _pk(),
    sa.Column(
        "sales_order_id", sa.Integer, sa.ForeignKey("sales_orders.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("line_no", sa.Integer, nullable=False),
    sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id"), nullable=False),
    sa.Column("description", sa.String(4000)),
    sa.Column("quantity", Quantity, nullable=False),
    sa.Column("quantity_invoiced", Quantity, nullable=False, server_default="0"),
    sa.Column("unit_price", Money, nullable=False),
    sa.UniqueConstraint("sales_order_id", "line_no"),
)

invoices = sa.Table(
    "invoices",
    metadata,
    _pk(),
    _org_fk(),
    sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False),
    sa.Column("sales_order_id", sa.Integer, sa.ForeignKey("sales_orders.id")),
    sa.Column("doc_number", sa.String(21), nullable=False),
    sa.Column("txn_date", sa.Date, nullable=False),
    sa.Column("due_date", sa.Date),
    sa.Column("total_amount", Money, nullable=False),
    sa.Column("status", sa.String(10), nullable=False, server_default="open"),  # draft | open | void
    sa.Column("replaces_invoice_id", sa.Integer, sa.ForeignKey("invoices.id")),
    sa.Column("qbo_id", sa.String(32)),
    # pending | synced | error | voided — written by the sync only
    sa.Column("sync_status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("synced_at", UTCDateTime),
    sa.Column("amount_paid", Money, nullable=False, server_default="0"),
    sa.Column("amount_due", Money),
    # of amount_paid: what credit memos settled, and what refund receipts paid back (written by the sync only)
    sa.Column("amount_credited", Money, nullable=False, server_default="0"),
    sa.Column("amount_refunded", Money, nullable=False, server_default="0"),
    # unpaid | partial | paid | overdue | voided | refunded
    sa.Column("payment_status", sa.String(10), nullable=False, server_default="unpaid"),
    sa.Column("payment_date", sa.Date),
    sa.Column("qb_payment_id", sa.String(32)),
    sa.Column("last_payment_sync_at", UTCDateTime),
    # the qbo_mirror.version of the QuickBooks invoice the payment columns were last derived from
    sa.Column("payment_mirror_version", sa.String(32)),
    *_timestamps(),
    sa.UniqueConstraint("organization_id", "doc_number"),
    sa.UniqueConstraint("organization_id", "qbo_id"),
    sa.Index(None, "organization_id", "payment_status", "due_date"),
)

invoice_lines = sa.Table(
    "invoice_lines",
    metadata,
    _pk(),
    sa.Column("invoice_id", sa.Integer, sa.ForeignKey("invoices.id", ondelete="CASCADE"), nullable=False),
    sa.Column("line_no", sa.Integer, nullable=False),
    sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id"), nullable=False),
    sa.Column("description", sa.String(4000)),
    sa.Column("quantity", Quantity, nullable=False),
    sa.Column("unit_price", Money, nullable=False),
    sa.Column("amount", Money, nullable=False),
    sa.UniqueConstraint("invoice_id", "line_no"),
)

# --- Tables the sync owns -------------------------------------------------------------------------------------

qbo_connections = sa.Table(
    "qbo_connections",
    metadata,
    _pk(),
    _org_fk(),
    sa.Column("realm_id", sa.String(32), nullable=False),
    sa.Column("environment", sa.String(12), nullable=False),  # local | sandbox | production
    sa.Column("base_url", sa.String(255), nullable=False),
    sa.Column("access_token_enc", sa.Text),  # Fernet ciphertext, never plaintext
    sa.Column("refresh_token_enc", sa.Text),
    sa.Column("access_token_expires_at", UTCDateTime),
    sa.Column("refresh_token_expires_at", UTCDateTime),  # rolling: every refresh moves it
    sa.Column("refresh_token_hard_expires_at", UTCDateTime),  # the grant's cap (Intuit: 5 years from consent)
    sa.Column("token_version", sa.Integer, nullable=False, server_default="0"),
    # connected | needs_reauth | disconnected
    sa.Column("status", sa.String(16), nullable=False, server_default="connected"),
    sa.Column("status_reason", sa.String(1000)),
    *_timestamps(),
    sa.UniqueConstraint("organization_id", "realm_id"),
)

# Per-realm QuickBooks rate limits shared by every thread and process (quickbooks/ratelimit.py). Times are epoch
# seconds as floats: the limiter compares them on every request and needs sub-millisecond resolution.
qbo_rate_realms = sa.Table(
    "qbo_rate_realms",
    metadata,
    sa.Column("realm_id", sa.String(32), primary_key=True),  # the row each admission locks
    sa.Column(
        "paused_until", sa.Float, nullable=False, server_default="0"
    ),  # after a 429: nobody sends before
    # what the limiter learned the realm takes (NULL: Intuit's documented numbers)
    sa.Column("budget", sa.JSON),
)

qbo_rate_requests = sa.Table(
    "qbo_rate_requests",
    metadata,
    _pk(),
    sa.Column("realm_id", sa.String(32), nullable=False),
    sa.Column("is_batch", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("admitted_at", sa.Float, nullable=False, server_default="0"),  # when the limiter let it go
    sa.Column("sent_at", sa.Float, nullable=False),  # when the answer arrived, once it has
    sa.Column("in_flight_until", sa.Float),  # set while in flight; a crashed holder's slot frees at this time
    sa.Index(None, "realm_id", "sent_at"),
)

qbo_sync_state = sa.Table(
    "qbo_sync_state",
    metadata,
    _pk(),
    _org_fk(),
    sa.Column("entity_type", sa.String(16), nullable=False),  # customer | item | invoice
    sa.Column("entity_id", sa.Integer, nullable=False),
    sa.Column("qbo_id", sa.String(32), nullable=False),
    sa.Column("sync_token", sa.String(16), nullable=False),
    sa.Column("base", sa.JSON, nullable=False),  # the last state both sides agreed on (three-way merge base)
    sa.Column("qbo_updated_at", UTCDateTime),
    sa.Column("last_synced_at", UTCDateTime, nullable=False, default=utcnow),
    sa.UniqueConstraint("organization_id", "entity_type", "entity_id"),
    sa.UniqueConstraint("organization_id", "entity_type", "qbo_id"),
)

QUEUE_STATES = ("pending", "in_progress", "done", "dead")

sync_queue = sa.Table(
    "sync_queue",
    metadata,
    _pk(),
    _org_fk(),
    sa.Column("entity_type", sa.String(16), nullable=False),
    sa.Column("entity_id", sa.Integer, nullable=False),
    sa.Column("operation", sa.String(8), nullable=False),  # insert | update
    sa.Column("status", sa.String(12), nullable=False, server_default="pending"),
    sa.Column("change_count", sa.Integer, nullable=False, server_default="1"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("lease_owner", sa.String(64)),
    sa.Column("lease_expires_at", UTCDateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("enqueued_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("completed_at", UTCDateTime),
    sa.CheckConstraint("status IN ('pending', 'in_progress', 'done', 'dead')", name="status"),
    # claim: pending work that is due, oldest first; the sensor's per-organisation depth
    sa.Index(None, "status", "next_attempt_at", "id"),
    sa.Index(None, "organization_id", "status"),
    # a claim skips records that have an older unfinished row
    sa.Index(None, "entity_type", "entity_id", "status"),
    # coalescing: at most one pending row per record, so ten edits become one push of the latest state
    sa.Index(
        "uq_sync_queue_pending_entity",
        "entity_type",
        "entity_id",
        unique=True,
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    ),
)

sync_conflicts = sa.Table(
    "sync_conflicts",
    metadata,
    _pk(),
    _org_fk(),
    sa.Column("entity_type", sa.String(16), nullable=False),
    sa.Column("entity_id", sa.Integer),
    sa.Column("qbo_id", sa.String(32)),
    sa.Column("field", sa.String(64), nullable=False),
    sa.Column("base_value", sa.JSON),
    sa.Column("batchly_value", sa.JSON),
    sa.Column("qbo_value", sa.JSON),
    sa.Column("batchly_updated_at", UTCDateTime),
    sa.Column("qbo_updated_at", UTCDateTime),
    # pending_review | batchly | quickbooks | value
    sa.Column("resolution", sa.String(16), nullable=False),
    sa.Column("resolved_value", sa.JSON),
    sa.Column("resolved_by", sa.String(200)),
    sa.Column("resolved_at", UTCDateTime),
    sa.Column("detected_at", UTCDateTime, nullable=False, default=utcnow),
    sa.Column("run_id", sa.String(64)),
    sa.Column("reason", sa.String(16)),  # both_changed | first_link | owned_field (none for a link review)
    # +1 whenever the values a review shows change: a decision names the revision it was made on
    sa.Column("revision", sa.Integer, nullable=False, server_default="1"),
    sa.Index(None, "organization_id", "resolution"),
    # a record's conflicts: the field-change trigger refreshes its open reviews on every app edit
    sa.Index(None, "entity_type", "entity_id"),
)

sync_cursors = sa.Table(
    "sync_cursors",
    metadata,
    _pk(),
    _org_fk(),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("value", sa.String(255), nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow),
    sa.UniqueConstraint("organization_id", "name"),
)

qbo_mirror = sa.Table(
    "qbo_mirror",
    metadata,
    _org_fk(),
    sa.Column(
        "entity_type", sa.String(16), nullable=False
    ),  # QBO entity name: Customer, Item, Invoice, Payment…
    sa.Column("qbo_id", sa.String(32), nullable=False),
    sa.Column("sync_token", sa.String(16), nullable=False),
    sa.Column("last_updated_time", UTCDateTime, nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("pulled_at", UTCDateTime, nullable=False, default=utcnow),
    # a new random token on every write of the row: "has it changed since I read it" without any clock
    sa.Column("version", sa.String(32), nullable=False, server_default="0"),
    sa.PrimaryKeyConstraint("organization_id", "entity_type", "qbo_id"),
    sa.Index(None, "organization_id", "entity_type", "last_updated_time"),
)

# the mirror version each QuickBooks customer/item was last reconciled at (linked, created, sent to review or without
# news alike): reconciliation examines the mirror rows whose version differs, an equality test on the primary key
qbo_reconciled = sa.Table(
    "qbo_reconciled",
    metadata,
    _org_fk(),
    sa.Column("entity_type", sa.String(16), nullable=False),  # QBO entity name, as in qbo_mirror
    sa.Column("qbo_id", sa.String(32), nullable=False),
    sa.Column("mirror_version", sa.String(32), nullable=False),
    sa.PrimaryKeyConstraint("organization_id", "entity_type", "qbo_id"),
)

# what a payments pull owes a re-read: an invoice (entity_type "Invoice") or the invoices of a payment ("Payment")
# that a mirrored refund receipt or payment affects; noted with the mirror row, cleared with the re-read
# (store.invoice_payments), so an interrupted pull leaves them for the next; ``token`` changes on every noting
qbo_owed_reads = sa.Table(
    "qbo_owed_reads",
    metadata,
    _org_fk(),
    sa.Column("entity_type", sa.String(16), nullable=False),
    sa.Column("qbo_id", sa.String(32), nullable=False),
    sa.Column("token", sa.String(32), nullable=False),
    sa.Column("noted_at", UTCDateTime, nullable=False, default=utcnow),
    sa.PrimaryKeyConstraint("organization_id", "entity_type", "qbo_id"),
)

sync_log = sa.Table(
    "sync_log",
    metadata,
    _pk(),
    _org_fk(),
    sa.Column("direction", sa.String(4), nullable=False),  # pull | push
    sa.Column("entity_type", sa.String(16), nullable=False),
    sa.Column("entity_id", sa.Integer),
    sa.Column("qbo_id", sa.String(32)),
    sa.Column("action", sa.String(16), nullable=False),  # create | update | void | link | skip | …
    sa.Column("outcome", sa.String(8), nullable=False),  # ok | error
    sa.Column("message", sa.Text),
    sa.Column("run_id", sa.String(64)),
    sa.Column("created_at", UTCDateTime, nullable=False, default=utcnow),
    sa.Index(None, "organization_id", "created_at"),
)

# The pull's error list: a QuickBooks record (and field) Batchly cannot store — a value its columns cannot hold. One
# row per record and field while the problem lasts (the pull goes on with every other record, and retries this one
# each time); the record being stored removes its rows. A Dagster check fails while any row is here.
pull_errors = sa.Table(
    "pull_errors",
    metadata,
    _pk(),
    _org_fk(),
    sa.Column("entity_type", sa.String(16), nullable=False),  # QBO entity name, as in qbo_mirror
    sa.Column("qbo_id", sa.String(32), nullable=False),
    sa.Column("entity_id", sa.Integer),  # the Batchly twin, when there is one
    sa.Column("field", sa.String(64), nullable=False),
    sa.Column("message", sa.String(1000), nullable=False),
    sa.Column("first_seen_at", UTCDateTime, nullable=False, default=utcnow),
    sa.Column("last_seen_at", UTCDateTime, nullable=False, default=utcnow),
    sa.Column("run_id", sa.String(64)),
    sa.UniqueConstraint("organization_id", "entity_type", "qbo_id", "field"),
)

# Every (DocNumber, customer) an invoice was ever sent to a QuickBooks company with, written before the create leaves
# the process: after a create whose answer was lost, the DocNumber guard still finds that copy however the invoice was
# renumbered, voided or set to draft since. ``doc_key`` is the DocNumber as QuickBooks compares it (no letter case).
qbo_invoice_sends = sa.Table(
    "qbo_invoice_sends",
    metadata,
    sa.Column("realm_id", sa.String(32), primary_key=True),
    sa.Column("invoice_id", sa.Integer, primary_key=True),
    sa.Column("doc_key", sa.String(64), primary_key=True),
    sa.Column("customer_qbo_id", sa.String(32), primary_key=True),
    sa.Column("doc_number", sa.String(32), nullable=False),
    sa.Column("organization_id", sa.Integer, nullable=False),
    sa.Column("first_sent_at", UTCDateTime, nullable=False),
)

# Echo suppression: a sync transaction inserts a row here first and deletes it before commit. The outbox triggers
# skip while a row is visible, and only the writing transaction can ever see its own uncommitted row.
sync_write_marker = sa.Table(
    "sync_write_marker",
    metadata,
    _pk(),
    sa.Column("created_at", UTCDateTime, nullable=False, default=utcnow),
)

# When each synced field of a customer or item last changed in Batchly (app writes only), filled by triggers
# (store/field_changes.py): newest-wins compares per field.
batchly_field_changes = sa.Table(
    "batchly_field_changes",
    metadata,
    sa.Column("entity_type", sa.String(16), primary_key=True),
    sa.Column("entity_id", sa.Integer, primary_key=True),
    sa.Column("field", sa.String(64), primary_key=True),
    sa.Column("changed_at", UTCDateTime, nullable=False),
)

# Fields of an organisation's customers or items that go to manual review when both sides changed them (instead of
# the entity's rule), honoured by the pull and the push alike (store/review_fields.py).
merge_review_fields = sa.Table(
    "merge_review_fields",
    metadata,
    sa.Column(
        "organization_id", sa.Integer, sa.ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("entity_type", sa.String(16), primary_key=True),
    sa.Column("field", sa.String(64), primary_key=True),
)

# One push per QuickBooks company across every entry point (CLI, Dagster, benchmarks): the holder's lease is renewed
# while it works and checked before every write; a dead holder's lock lapses within one lease.
qbo_push_locks = sa.Table(
    "qbo_push_locks",
    metadata,
    sa.Column("realm_id", sa.String(32), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("organization_id", sa.Integer, nullable=False),
    sa.Column("acquired_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)

WEBHOOK_EVENT_STATES = ("pending", "done", "ignored")

# The webhook inbox: every event Intuit delivered, once (``event_id``: the CloudEvents id, or a digest of a legacy
# entry). The receiver writes it; a sensor drains the pending ones into one targeted pull run per realm, which claims
# them (``run_id``) and marks them done once its writes are committed. Unknown realms and entities the sync does not
# read are recorded as ``ignored`` with a ``note``.
qbo_webhook_events = sa.Table(
    "qbo_webhook_events",
    metadata,
    _pk(),
    sa.Column("event_id", sa.String(200), nullable=False),
    sa.Column("realm_id", sa.String(32), nullable=False),
    # QBO entity name: Customer, Item, Invoice, Payment…
    sa.Column("entity_type", sa.String(32), nullable=False),
    sa.Column("entity_id", sa.String(32), nullable=False),
    # Create | Update | Delete | Merge | Void | Emailed
    sa.Column("operation", sa.String(16), nullable=False),
    sa.Column("event_time", UTCDateTime),  # when QuickBooks says the change happened
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("status", sa.String(8), nullable=False, server_default="pending"),
    sa.Column("note", sa.String(200)),
    sa.Column("run_id", sa.String(64)),  # the pull run that claimed the event
    sa.Column("processed_at", UTCDateTime),
    sa.CheckConstraint("status IN ('pending', 'done', 'ignored')", name="status"),
    sa.UniqueConstraint("event_id"),
    # the sensor's pending events per realm, and a run's claim
    sa.Index(None, "status", "realm_id", "id"),
    sa.Index(None, "run_id"),
    sa.Index(None, "realm_id", "received_at"),  # when each realm last sent something (webhooks_flowing)
)

# The CDC repair per realm: ``repaired_until`` is the QuickBooks time up to which a sweep saw every change (the next
# sweep starts there), ``swept_at`` when the last sweep asked CDC, ``gaps`` what it found that no event had brought.
qbo_webhook_realms = sa.Table(
    "qbo_webhook_realms",
    metadata,
    sa.Column("realm_id", sa.String(32), primary_key=True),
    sa.Column("repaired_until", UTCDateTime, nullable=False),
    sa.Column("swept_at", UTCDateTime, nullable=False),
    sa.Column("gaps", sa.Integer, nullable=False, server_default="0"),
)

# Each start of a webhook receiver: a start after the last sweep means it was down, so a sweep is due at once.
qbo_webhook_receivers = sa.Table(
    "qbo_webhook_receivers",
    metadata,
    _pk(),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("address", sa.String(255), nullable=False),
    sa.Index(None, "started_at"),
)

# Metered QuickBooks reads (queries, reads by id, CDC) per app (OAuth client id), month (UTC, ``YYYY-MM``) and realm.
qbo_read_meter = sa.Table(
    "qbo_read_meter",
    metadata,
    sa.Column("app_id", sa.String(100), primary_key=True),
    sa.Column("month", sa.String(7), primary_key=True),
    sa.Column("realm_id", sa.String(32), primary_key=True),
    sa.Column("reads", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)
