"""A QuickBooks value Batchly cannot store (a NUL character, a price beyond NUMERIC(12,2)) that the push would take
back into Batchly fails that record alone, naming it and the field: the rest of its chunk is checkpointed, on SQLite
(which would store most such values) and PostgreSQL (which refuses them) alike."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.defs.monitoring.tables import issues
from batchly_pipelines.quickbooks.client import QuickBooksClient, WriteOp
from batchly_pipelines.services.push.checkpoint import Checkpointer, Pushed
from batchly_pipelines.services.push.organization import PushStats
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.queue import SyncQueue
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.push import Books, queue_status, update


def _row(engine: Engine, table: sa.Table, row_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(table).where(table.c.id == row_id)).mappings().one())


def test_a_remerged_value_batchly_cannot_store_fails_that_customer_alone(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    with engine.begin() as conn:
        bad = f.customer(conn, org, display_name="Bad One", email="bad@example.com", notes="fine")
        good = f.customer(conn, org, display_name="Good One", email="good@example.com")
    assert push().actions == {"customer.create": 2}
    ids = {o["DisplayName"]: o["Id"] for o in books.objects("Customer")}
    books.act(action="update_customer", customer_id=ids["Bad One"], fields={"Notes": "gate 12\x0034"})
    # a stale SyncToken: 5010, and the re-merge takes QuickBooks' Notes
    update(engine, s.customers, bad, email="bad2@example.com")
    update(engine, s.customers, good, email="good2@example.com")  # another record of the same chunk

    stats = push()

    assert stats.dead == 1
    qbo = {o["DisplayName"]: o for o in books.objects("Customer")}
    assert qbo["Good One"]["PrimaryEmailAddr"]["Address"] == "good2@example.com"
    assert queue_status(engine, "customer", good) == ("done", None)
    status, error = queue_status(engine, "customer", bad)
    assert status == "dead"
    assert error is not None and error.startswith(f"customer {bad} notes: QuickBooks' value contains a NUL")
    assert [field for field, _ in issues("customer", bad, error)] == ["notes"]  # as Dagster's table shows it
    assert _row(engine, s.customers, bad)["notes"] == "fine"  # left out, on SQLite too
    assert _row(engine, s.customers, bad)["email"] == "bad2@example.com"
    assert push().actions == {}  # nothing stuck in progress, nothing raised


def test_a_remerged_item_price_beyond_numeric_12_2_fails_that_item_alone(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    with engine.begin() as conn:
        widget = f.item(conn, org, name="Widget", description="blue")
        other = f.item(conn, org, name="Gadget", description="red")
    assert push().actions == {"item.create": 2}
    ids = {o["Name"]: o["Id"] for o in books.objects("Item")}
    books.act(action="set_item_price", item_id=ids["Widget"], unit_price="100000000000.00")
    update(engine, s.items, widget, description="blue, large")  # 5010: the re-merge takes QuickBooks' price
    update(engine, s.items, other, description="red, small")

    stats = push()

    assert stats.dead == 1
    assert queue_status(engine, "item", other) == ("done", None)
    status, error = queue_status(engine, "item", widget)
    assert status == "dead"
    assert error is not None and error.startswith(f"item {widget} unit_price: QuickBooks' value 100000000000")
    assert _row(engine, s.items, widget)["unit_price"] != Decimal("100000000000.00")
    assert {o["Name"]: o["Description"] for o in books.objects("Item")}["Gadget"] == "red, small"


def test_a_checkpoint_write_the_database_refuses_fails_that_record_alone(engine: Engine, org: int) -> None:
    """The checkpoint's second line of defence: each outcome is written under its own savepoint, so one the
    database refuses (here: a QuickBooks Id another customer already holds) is failed, the others are stored."""
    with engine.begin() as conn:
        first = f.customer(conn, org, display_name="First")
        second = f.customer(conn, org, display_name="Second")
    queue = SyncQueue(engine)
    items = queue.claim("worker", limit=10, lease=timedelta(minutes=5), organization_id=org)
    by_record = {(item.entity_type, item.entity_id): [item] for item in items}
    outcomes = [
        Pushed("customer", first, "create", qbo_obj={"Id": "7", "SyncToken": "0"}, base={}),
        Pushed("customer", second, "create", qbo_obj={"Id": "7", "SyncToken": "0"}, base={}),
    ]

    result = Checkpointer(engine, queue, org, "run").write(outcomes, by_record)

    assert (result.acked, result.dead) == (1, 1)
    assert _row(engine, s.customers, first)["qbo_id"] == "7"
    assert _row(engine, s.customers, second)["qbo_id"] is None
    assert queue_status(engine, "customer", first) == ("done", None)
    status, error = queue_status(engine, "customer", second)
    assert status == "dead"
    assert error is not None and error.startswith(f"customer {second}: Batchly refused to store")


def test_a_first_link_taking_a_value_batchly_cannot_store_fails_that_customer_alone(
    engine: Engine, org: int, push: Callable[..., PushStats], client: QuickBooksClient, books: Books
) -> None:
    """6240: QuickBooks already has the customer (same name and e-mail), with Notes Batchly cannot store, changed
    after Batchly's record: the first link's merge takes them — the customer fails alone, naming the field."""
    with engine.begin() as conn:
        twin = f.customer(conn, org, display_name="Twin", email="twin@example.com")
        fresh = f.customer(conn, org, display_name="Fresh", email="fresh@example.com")
    body = {"DisplayName": "Twin", "PrimaryEmailAddr": {"Address": "twin@example.com"}, "Notes": "a\x00b"}
    [made] = client.write_batch([WriteOp("twin", "Customer", "create", body, "test-twin")])
    assert made.ok

    push()

    assert queue_status(engine, "customer", fresh) == ("done", None)
    status, error = queue_status(engine, "customer", twin)
    assert status == "dead"
    assert error is not None and error.startswith(f"customer {twin} notes: QuickBooks' value contains a NUL")
    assert _row(engine, s.customers, twin)["notes"] is None
    assert sorted(o["DisplayName"] for o in books.objects("Customer")) == ["Fresh", "Twin"]  # no duplicate
