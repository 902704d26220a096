"""An invoice whose customer or item is in the dead letter is parked behind it, naming it, and follows it to
QuickBooks once it is pushed; the dead-lettered record is not sent again by every push that has an invoice of it.
Before, each run re-sent the refused customer and failed the invoice again, due a few seconds later, so the sensor
started a run for it every few seconds for as long as the customer stayed in the dead letter."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import QuickBooksClient, WriteOp
from batchly_pipelines.services.push.organization import PushStats
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.queue import RetryPolicy, SyncQueue
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.push import TIME_SCALE, Books, invoice_row, queue_status, update


def _a_customer_quickbooks_refuses(engine: Engine, org: int, client: QuickBooksClient) -> int:
    """A customer whose name another QuickBooks customer has (6240, left for review: dead-lettered)."""
    other = {"DisplayName": "Zoë O'Brien", "PrimaryEmailAddr": {"Address": "someone.else@example.com"}}
    client.write_batch([WriteOp("x", "Customer", "create", other, "pre-existing-other")])
    with engine.begin() as conn:
        return f.customer(conn, org, display_name="Zoë O'Brien", email="zoe@example.com")


def test_an_invoice_of_a_dead_lettered_customer_is_parked_naming_it_and_nothing_is_sent_again(
    engine: Engine,
    org: int,
    client: QuickBooksClient,
    push: Callable[..., PushStats],
    books: Books,
    sent: list[WriteOp],
) -> None:
    refused = _a_customer_quickbooks_refuses(engine, org, client)
    with engine.begin() as conn:
        item = f.item(conn, org)
        good = f.customer(conn, org, display_name="Acme Ltd")
        blocked = [f.invoice(conn, org, refused, item, doc_number=f"B-{n}") for n in (1, 2)]
        fine = f.invoice(conn, org, good, item, doc_number="G-1")

    stats = push()

    assert [i["DocNumber"] for i in books.objects("Invoice")] == ["G-1"]
    assert stats.dead == 1  # the customer; its invoices wait for it
    for invoice in blocked:
        status, error = queue_status(engine, "invoice", invoice)
        assert status == "pending" and invoice_row(engine, invoice)["sync_status"] == "pending"
        assert error is not None and error.startswith(f"invoice {invoice} customer_id: customer {refused} ")
        assert "in the dead letter" in error and "not the same customer" in error, error
    assert queue_status(engine, "invoice", fine)[0] == "done"
    with engine.connect() as conn:  # parked: due after the longest backoff, not in a few seconds
        due = conn.execute(
            sa.select(sa.func.min(s.sync_queue.c.next_attempt_at)).where(s.sync_queue.c.status == "pending")
        ).scalar_one()
    assert due - utcnow() > RetryPolicy(time_scale=TIME_SCALE).longest_delay * 0.9

    before = len(sent)
    queue = SyncQueue(engine)
    for _ in range(3):
        queue.expedite(org, "invoice", blocked)  # as if the hour had passed
        assert push().actions == {"invoice.failed": 2}
    assert len(sent) == before  # the refused customer is not sent again
    assert queue.due_by_organization() == {}


def test_once_the_customer_is_fixed_and_retried_its_invoices_are_pushed_once(
    engine: Engine, org: int, client: QuickBooksClient, push: Callable[..., PushStats], books: Books
) -> None:
    refused = _a_customer_quickbooks_refuses(engine, org, client)
    with engine.begin() as conn:
        item = f.item(conn, org)
        invoice = f.invoice(conn, org, refused, item, doc_number="B-1")
    push()
    assert queue_status(engine, "invoice", invoice)[0] == "pending"  # parked for the longest backoff
    update(
        engine, s.customers, refused, display_name="Zoë O'Brien (Cork)"
    )  # the operator's fix queues it again

    stats = push()

    assert stats.actions["customer.create"] == 1 and stats.actions["invoice.create"] == 1
    [pushed] = books.objects("Invoice")
    assert pushed["DocNumber"] == "B-1" and invoice_row(engine, invoice)["sync_status"] == "synced"
    with engine.connect() as conn:
        states = conn.execute(sa.select(s.sync_queue.c.status).distinct()).scalars().all()
    assert set(states) == {"done"}
