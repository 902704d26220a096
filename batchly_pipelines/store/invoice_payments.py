"""Invoices' payment columns: the linked invoices with their mirrored QuickBooks twin, and the sync's writes to them;
and what a payments pull owes a re-read (``qbo_owed_reads``).

A payment write leaves ``updated_at`` alone: it keeps meaning "last changed in Batchly".

What is owed is noted in the transaction that mirrors the refund receipt or payment behind it and cleared in the one
that stores the re-read invoices, each noting with a fresh token: a clearing removes only the notings it read, so
one made meanwhile (by a concurrent pull) stays owed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batchly_pipelines.rules.payments import PaymentStatus
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.lookup import among
from batchly_pipelines.store.upsert import bulk_upsert

m, inv, owed = s.qbo_mirror.c, s.invoices.c, s.qbo_owed_reads.c
PAYMENT_COLUMNS = (
    "amount_paid",
    "amount_due",
    "amount_credited",
    "amount_refunded",
    "payment_status",
    "payment_date",
    "qb_payment_id",
)


def _with_twin(*columns: sa.ColumnElement[Any]) -> sa.Select[Any]:
    """Linked invoices joined with their mirrored QuickBooks invoice (live or deleted)."""
    return sa.select(inv.id, inv.qbo_id, *columns).join(
        s.qbo_mirror,
        sa.and_(m.organization_id == inv.organization_id, m.entity_type == "Invoice", m.qbo_id == inv.qbo_id),
    )


def _of(conn: Connection, organization_id: int | Sequence[int]) -> sa.ColumnElement[bool]:
    """The invoice is the organisation's, or one of the organisations'."""
    if isinstance(organization_id, int):
        return inv.organization_id == organization_id
    return among(conn, inv.organization_id, organization_id)


def _page(conn: Connection, query: sa.Select[Any], after: int, limit: int) -> list[dict[str, Any]]:
    """The next ``limit`` rows of ``query`` after invoice id ``after``."""
    rows = conn.execute(query.where(inv.id > after).order_by(inv.id).limit(limit)).mappings()
    return [dict(r) for r in rows]


def unreconciled_payments(
    conn: Connection, organization_id: int, after: int, limit: int
) -> list[dict[str, Any]]:
    """Linked invoices whose QuickBooks twin (live or deleted) has a mirror version they were not reconciled with:
    id, qbo_id, the payment columns and the twin's ``data``, ``deleted`` and ``version``."""
    query = _with_twin(*(inv[c] for c in PAYMENT_COLUMNS), m.data, m.deleted, m.version).where(
        inv.organization_id == organization_id,
        sa.or_(inv.payment_mirror_version.is_(None), inv.payment_mirror_version != m.version),
    )
    return _page(conn, query, after, limit)


def reconciled_payments(
    conn: Connection, organization_id: int | Sequence[int], after: int, limit: int
) -> list[dict[str, Any]]:
    """Linked invoices reconciled with their live twin's current mirror version: id, qbo_id, organization_id, the
    payment columns and the twin's ``data`` (of one organisation, or of several in one keyset)."""
    query = _with_twin(inv.organization_id, *(inv[c] for c in PAYMENT_COLUMNS), m.data).where(
        _of(conn, organization_id), m.deleted.is_(False), inv.payment_mirror_version == m.version
    )
    return _page(conn, query, after, limit)


def unmirrored_invoices(conn: Connection, organization_id: int) -> list[str]:
    """QuickBooks ids of the organisation's linked invoices the mirror holds no row of (live or deleted), sorted."""
    mirrored = sa.select(m.qbo_id).where(
        m.organization_id == organization_id, m.entity_type == "Invoice", m.qbo_id == inv.qbo_id
    )
    query = sa.select(inv.qbo_id).where(
        inv.organization_id == organization_id, inv.qbo_id.is_not(None), ~mirrored.exists()
    )
    return sorted(conn.execute(query).scalars())


def linked_invoice_ids(conn: Connection, organization_id: int) -> list[str]:
    """QuickBooks ids of all the organisation's linked invoices, sorted."""
    query = sa.select(inv.qbo_id).where(inv.organization_id == organization_id, inv.qbo_id.is_not(None))
    return sorted(conn.execute(query).scalars())


def linked_totals(
    conn: Connection, organization_id: int | Sequence[int], after: int, limit: int
) -> list[dict[str, Any]]:
    """Linked invoices that are not void, with a live twin: id, qbo_id, organization_id, ``total_amount`` and the
    twin's ``data`` (of one organisation, or of several in one keyset)."""
    query = _with_twin(inv.organization_id, inv.total_amount, m.data).where(
        _of(conn, organization_id), m.deleted.is_(False), inv.status != "void"
    )
    return _page(conn, query, after, limit)


def write_payment_columns(
    conn: Connection, invoice_id: int, changes: Mapping[str, Any], *, synced_at: datetime, mirror_version: str
) -> None:
    """Write changed payment columns and record when and from which mirror version they were derived."""
    conn.execute(
        sa.update(s.invoices)
        .where(inv.id == invoice_id)
        .values(
            **changes,
            last_payment_sync_at=synced_at,
            payment_mirror_version=mirror_version,
            updated_at=inv.updated_at,
        )
    )


def overdue_candidates(conn: Connection, organization_id: int, today: date) -> list[dict[str, Any]]:
    """Invoices whose overdue status may be wrong for ``today``: unpaid or partly paid, owing and past due, or
    overdue but no longer owing or past due (id, payment_status, total_amount, amount_due, due_date)."""
    query = sa.select(inv.id, inv.payment_status, inv.total_amount, inv.amount_due, inv.due_date).where(
        inv.organization_id == organization_id,
        inv.amount_due.is_not(None),
        sa.or_(
            sa.and_(
                inv.payment_status.in_([PaymentStatus.UNPAID, PaymentStatus.PARTIAL]),
                inv.amount_due > 0,
                inv.due_date < today,
            ),
            sa.and_(
                inv.payment_status == PaymentStatus.OVERDUE,
                sa.or_(inv.due_date.is_(None), inv.due_date >= today, inv.amount_due <= 0),
            ),
        ),
    )
    return [dict(r) for r in conn.execute(query).mappings()]


def set_payment_status(conn: Connection, invoice_id: int, status: str) -> None:
    """Set one invoice's payment status."""
    conn.execute(
        sa.update(s.invoices)
        .where(inv.id == invoice_id)
        .values(payment_status=status, updated_at=inv.updated_at)
    )


OwedReads = dict[tuple[str, str], str]  # (entity type, QuickBooks id) → the token of its latest noting


def owe_reads(conn: Connection, organization_id: int, entity: str, qbo_ids: Iterable[str]) -> None:
    """Note that the pull owes a re-read of the ``entity`` (``Invoice``, or ``Payment``: its invoices) ``qbo_ids``;
    one noted already gets a new token."""
    now = s.utcnow()
    bulk_upsert(
        conn,
        s.qbo_owed_reads,
        (
            {
                "organization_id": organization_id,
                "entity_type": entity,
                "qbo_id": qbo_id,
                "token": uuid.uuid4().hex,
                "noted_at": now,
            }
            for qbo_id in sorted(set(qbo_ids))
        ),
        key=("organization_id", "entity_type", "qbo_id"),
    )


def owed_reads(conn: Connection, organization_id: int) -> OwedReads:
    """Everything the organisation's pulls owe a re-read, with each noting's token."""
    query = sa.select(owed.entity_type, owed.qbo_id, owed.token).where(
        owed.organization_id == organization_id
    )
    return {(entity, qbo_id): token for entity, qbo_id, token in conn.execute(query).all()}


def clear_owed_reads(conn: Connection, organization_id: int, settled: OwedReads) -> None:
    """Remove the notings ``settled`` (each only while its token is unchanged: a later noting stays owed)."""
    if not settled:
        return
    conn.execute(
        sa.delete(s.qbo_owed_reads).where(
            owed.organization_id == organization_id,
            owed.entity_type == sa.bindparam("b_entity"),
            owed.qbo_id == sa.bindparam("b_qbo_id"),
            owed.token == sa.bindparam("b_token"),
        ),
        [{"b_entity": e, "b_qbo_id": i, "b_token": token} for (e, i), token in settled.items()],
    )
