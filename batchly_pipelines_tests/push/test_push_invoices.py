"""Invoices: validation never blocks good records, immutability, void + re-create, sales orders never sent."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchly_pipelines.rules.validation import IMMUTABLE_MESSAGE
from batchly_pipelines.services.push.organization import PushStats
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.queue import RetryPolicy, SyncQueue
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.push import Books, queue_status, update


def _invoice_row(engine: Engine, invoice_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(s.invoices).where(s.invoices.c.id == invoice_id)).mappings().one())


def _pushed_invoice(
    engine: Engine, org: int, push: Callable[..., PushStats], doc_number: str = "INV-1"
) -> int:
    with engine.begin() as conn:
        customer = f.customer(conn, org)
        item = f.item(conn, org)
        invoice = f.invoice(conn, org, customer, item, doc_number=doc_number)
    assert push().actions["invoice.create"] == 1
    return invoice


# -- validation fuzz ---------------------------------------------------------------------------------------------


def _break(
    conn: Connection, rng: random.Random, invoice_id: int, inactive_item: int, bad_customer: int
) -> str:
    """Damage one invoice in a way validation must catch; returns the field its message must name."""
    lines = s.invoice_lines.c
    first = sa.update(s.invoice_lines).where(lines.invoice_id == invoice_id, lines.line_no == 1)
    kind = rng.choice(
        ["no_lines", "negative_qty", "total", "amount", "inactive_item", "bad_customer", "price"]
    )
    if kind == "no_lines":
        conn.execute(sa.delete(s.invoice_lines).where(lines.invoice_id == invoice_id))
        return "lines"
    if kind == "negative_qty":
        conn.execute(first.values(quantity=Decimal(-2), amount=Decimal("-20.20")))
        return "lines[1].quantity"
    if kind == "total":
        conn.execute(
            sa.update(s.invoices).where(s.invoices.c.id == invoice_id).values(total_amount=Decimal("1.00"))
        )
        return "total_amount"
    if kind == "amount":
        conn.execute(first.values(amount=Decimal("20.21")))
        return "lines[1].amount"
    if kind == "price":
        conn.execute(first.values(unit_price=Decimal("-10.10"), amount=Decimal("-20.20")))
        return "lines[1].unit_price"
    if kind == "inactive_item":
        conn.execute(first.values(item_id=inactive_item))
        return "lines[1].item_id"
    conn.execute(sa.update(s.invoices).where(s.invoices.c.id == invoice_id).values(customer_id=bad_customer))
    return "customer_id"


def test_fuzzed_invalid_invoices_are_dead_lettered_while_every_valid_one_lands(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    rng = random.Random(6)
    broken: dict[int, str] = {}
    with engine.begin() as conn:
        customer = f.customer(conn, org)
        bad_customer = f.customer(conn, org, display_name="Tab\there")
        item = f.item(conn, org)
        inactive = f.item(conn, org, name="Retired", is_active=False)
        invoices = [f.invoice(conn, org, customer, item, doc_number=f"F-{n}") for n in range(60)]
        for invoice_id in rng.sample(invoices, 25):
            broken[invoice_id] = _break(conn, rng, invoice_id, inactive, bad_customer)

    stats = push()

    landed = books.by_doc_number()
    valid = [i for i in invoices if i not in broken]
    assert sorted(landed) == sorted(f"F-{invoices.index(i)}" for i in valid)
    assert all(len(found) == 1 for found in landed.values())
    assert stats.actions["invoice.create"] == len(valid) and stats.actions["invoice.failed"] == len(broken)
    for invoice_id, field in broken.items():
        status, error = queue_status(engine, "invoice", invoice_id)
        assert status == "dead" and error is not None
        assert f"invoice {invoice_id} {field}:" in error, error
        assert _invoice_row(engine, invoice_id)["sync_status"] == "error"
    with engine.connect() as conn:
        errors = conn.execute(
            sa.select(s.sync_log.c.entity_id, s.sync_log.c.message).where(s.sync_log.c.outcome == "error")
        ).all()
    assert {entity_id for entity_id, _ in errors} >= set(broken)


def test_invoice_waits_for_a_customer_that_quickbooks_refused(
    engine: Engine, org: int, push: Callable[..., PushStats]
) -> None:
    """A customer refused by QuickBooks (not by validation) keeps its invoices pending, not dead: parked behind it
    (``test_push_blocked``)."""
    with engine.begin() as conn:
        f.customer(conn, org, display_name="Acme Ltd", email="one@example.com")
    push()
    with engine.begin() as conn:  # same name, another customer: QuickBooks answers 6240, left for review
        twin = f.customer(conn, org, display_name="Acme Ltd", email="two@example.com")
        invoice = f.invoice(conn, org, twin, f.item(conn, org))

    push()

    assert queue_status(engine, "customer", twin)[0] == "dead"
    status, error = queue_status(engine, "invoice", invoice)
    assert status == "pending" and error is not None
    assert error.startswith(f"invoice {invoice} customer_id: customer {twin} is in the dead letter (")


# -- immutability, corrections, voids ----------------------------------------------------------------------------


def test_edit_of_a_pushed_invoice_is_refused_and_never_sent(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    invoice = _pushed_invoice(engine, org, push)
    with engine.begin() as conn:
        lines = s.invoice_lines.c
        conn.execute(
            sa.update(s.invoice_lines).where(lines.invoice_id == invoice).values(description="changed")
        )

    stats = push()

    assert stats.dead == 1
    status, error = queue_status(engine, "invoice", invoice)
    assert status == "dead" and error == f"invoice {invoice} qbo_id: {IMMUTABLE_MESSAGE}"
    [qbo] = books.objects("Invoice")
    assert qbo["SyncToken"] == "0"


def test_correction_voids_the_old_invoice_and_creates_the_new_one(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    old = _pushed_invoice(engine, org, push)
    with engine.begin() as conn:
        row = conn.execute(sa.select(s.invoices).where(s.invoices.c.id == old)).mappings().one()
        new = f.invoice(
            conn, org, row["customer_id"], conn.execute(sa.select(s.items.c.id)).scalar_one(), "INV-1b", 1
        )
        conn.execute(sa.update(s.invoices).where(s.invoices.c.id == new).values(replaces_invoice_id=old))

    stats = push()

    assert stats.actions == {"invoice.void": 1, "invoice.create": 1}
    found = books.by_doc_number()
    [voided], [created] = found["INV-1"], found["INV-1b"]
    assert voided["TotalAmt"] == 0 and voided["PrivateNote"].startswith("Voided")
    assert created["TotalAmt"] == Decimal("20.20") and created["PrivateNote"] == "Replaces invoice INV-1"
    assert _invoice_row(engine, old)["sync_status"] == "voided"
    assert _invoice_row(engine, new)["sync_status"] == "synced"
    assert queue_status(engine, "invoice", new) == ("done", None)
    assert push().actions == {}


def test_void_in_batchly_voids_in_quickbooks(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    invoice = _pushed_invoice(engine, org, push)
    update(engine, s.invoices, invoice, status="void")

    assert push().actions == {"invoice.void": 1}
    [qbo] = books.objects("Invoice")
    assert qbo["TotalAmt"] == 0
    assert _invoice_row(engine, invoice)["sync_status"] == "voided"


def test_draft_invoices_wait_and_sales_orders_are_never_sent(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    with engine.begin() as conn:
        customer = f.customer(conn, org)
        item = f.item(conn, org)
        draft = f.invoice(conn, org, customer, item)
        conn.execute(sa.update(s.invoices).where(s.invoices.c.id == draft).values(status="draft"))
        key = conn.execute(
            sa.insert(s.sales_orders).values(
                organization_id=org,
                customer_id=customer,
                order_number="SO-1",
                delivery_date=date(2026, 11, 1),
            )
        ).inserted_primary_key
        assert key is not None
        order = int(key[0])
        now = utcnow()
        conn.execute(  # nothing enqueues sales orders; a stray row must still never reach QuickBooks
            sa.insert(s.sync_queue).values(
                organization_id=org,
                entity_type="sales_order",
                entity_id=order,
                operation="insert",
                next_attempt_at=now,
                enqueued_at=now,
                updated_at=now,
            )
        )

    stats = push()

    status, error = queue_status(engine, "sales_order", order)
    assert status == "dead" and error == "'sales_order' is never sent to QuickBooks"
    assert books.objects("Invoice") == [] and stats.actions["invoice.skip"] == 1
    realm = books.sandbox.state.realm(books.realm_id)
    assert realm is not None and not any("sales" in name.lower() for name in realm.objects)


def test_correction_of_an_invoice_never_pushed_creates_only_the_new_one(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    with engine.begin() as conn:
        customer, item = f.customer(conn, org), f.item(conn, org)
        old = f.invoice(conn, org, customer, item, doc_number="OLD-1")
        conn.execute(sa.update(s.invoices).where(s.invoices.c.id == old).values(status="draft"))
        new = f.invoice(conn, org, customer, item, doc_number="NEW-1")
        conn.execute(sa.update(s.invoices).where(s.invoices.c.id == new).values(replaces_invoice_id=old))

    stats = push()

    assert list(books.by_doc_number()) == ["NEW-1"]
    assert stats.actions["invoice.create"] == 1 and "invoice.void" not in stats.actions
    assert queue_status(engine, "invoice", new) == ("done", None)  # acknowledged at once, nothing owed


def test_waiting_for_another_record_never_uses_up_the_retry_budget(
    engine: Engine, org: int, push: Callable[..., PushStats]
) -> None:
    """An invoice that waits (its customer is not in QuickBooks: it backs off after an outage) is never sent, so its
    rounds are not attempts: more rounds than ``max_attempts`` leave it pending with no attempt counted, where it
    used to be dead-lettered. (One whose customer is in the dead letter follows it there: ``test_push_blocked``.)"""
    with engine.begin() as conn:
        customer = f.customer(conn, org, display_name="Acme Ltd")
        invoice = f.invoice(conn, org, customer, f.item(conn, org))
    queue = SyncQueue(engine, RetryPolicy(base_delay=timedelta(hours=1), max_delay=timedelta(hours=1)))
    [row] = queue.claim("earlier-run", limit=1, lease=timedelta(minutes=1), entity_types=["customer"])
    queue.fail(row, "HTTP 503 from QuickBooks (retries exhausted)")  # backing off for an hour
    for _ in range(RetryPolicy().max_attempts + 2):
        queue.expedite(org, "invoice", [invoice])  # due again at once, as "Sync now" makes it
        push(queue=queue)
    assert queue_status(engine, "invoice", invoice)[0] == "pending"
    with engine.connect() as conn:
        attempts = conn.execute(
            sa.select(s.sync_queue.c.attempts).where(
                s.sync_queue.c.entity_type == "invoice", s.sync_queue.c.entity_id == invoice
            )
        ).scalar_one()
    assert attempts == 0
