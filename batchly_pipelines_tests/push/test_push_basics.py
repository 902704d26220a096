"""Customers, items and invoices reach QuickBooks once, in dependency order, with links and results stored."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.services.push.organization import PushStats
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.queue import SyncQueue
from batchly_pipelines.store.sync_state import load_states
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.push import Books


def test_invoice_with_new_customer_and_item_lands_once(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    with engine.begin() as conn:
        customer = f.customer(conn, org, email="zoe@example.com")
        item = f.item(conn, org, description="A fine widget")
        invoice = f.invoice(conn, org, customer, item, doc_number="INV-1")

    stats = push()

    assert stats.actions == {"customer.create": 1, "item.create": 1, "invoice.create": 1}
    [qbo_invoice] = books.objects("Invoice")
    [qbo_customer] = books.objects("Customer")
    [qbo_item] = [i for i in books.objects("Item") if i["Name"] == "Widget"]
    assert qbo_invoice["DocNumber"] == "INV-1"
    assert qbo_invoice["CustomerRef"]["value"] == qbo_customer["Id"]
    assert str(qbo_invoice["TotalAmt"]) == "40.40"
    assert qbo_item["Description"] == "A fine widget"
    with engine.connect() as conn:
        row = conn.execute(sa.select(s.invoices).where(s.invoices.c.id == invoice)).mappings().one()
        assert (row["qbo_id"], row["sync_status"]) == (qbo_invoice["Id"], "synced")
        assert row["synced_at"] is not None
        [state] = load_states(conn, org, "invoice")
        assert state.sync_token == qbo_invoice["SyncToken"] and "fingerprint" in state.base
        log = conn.execute(sa.select(s.sync_log.c.entity_type, s.sync_log.c.outcome)).all()
    assert sorted(log) == [("customer", "ok"), ("invoice", "ok"), ("item", "ok")]
    assert SyncQueue(engine).depth()[org]["done"] == 3

    assert push().actions == {}  # nothing due: nothing sent again
    assert len(books.objects("Invoice")) == 1


def test_sync_now_does_not_wait_for_the_backoff_of_chosen_invoices(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    with engine.begin() as conn:
        invoice = f.invoice(conn, org, f.customer(conn, org), f.item(conn, org), doc_number="LATE-1")
    queue = SyncQueue(engine)
    for item in queue.claim("earlier-run", limit=10, lease=timedelta(minutes=1)):
        queue.fail(item, "503 Service Unavailable")  # backing off now

    assert push().actions == {}
    assert push(invoice_ids=[invoice]).actions["invoice.create"] == 1
    assert list(books.by_doc_number()) == ["LATE-1"]


def test_a_round_tops_up_its_last_chunk_so_batch_calls_go_full(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    """Each batch call costs one of the company's few batch calls a minute however many records it carries: a round
    whose invoices end in a partial chunk claims due invoices to fill it (50 invoices in rounds of 40: 30 + 20, not
    30 + 10 and then 10)."""
    with engine.begin() as conn:
        customer, item = f.customer(conn, org), f.item(conn, org)
    before = push().api["calls"]["batch"]  # the client's counts add up over its pushes
    with engine.begin() as conn:
        for n in range(50):
            f.invoice(conn, org, customer, item, doc_number=f"T-{n:02}")

    stats = push(claim_size=40)

    assert stats.actions == {"invoice.create": 50}
    assert len(books.objects("Invoice")) == 50
    assert stats.api["calls"]["batch"] - before == 2, stats.api
