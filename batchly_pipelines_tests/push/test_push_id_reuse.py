"""A record added after another was deleted is a new record in QuickBooks too.

SQLite hands the largest rowid out again once its row is deleted; the deleted record's link stayed behind under it,
so the push updated the deleted customer's QuickBooks twin with the new customer's values (found by an attack on the
push; PostgreSQL never reuses an id, and the test holds there as well)."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.services.push.organization import PushStats
from batchly_pipelines.store import schema as s
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.push import Books


def test_a_customer_added_after_a_delete_is_created_not_written_over_the_deleted_ones_twin(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    with engine.begin() as conn:
        f.customer(conn, org, display_name="Ada", email="ada@example.com")
        bob = f.customer(conn, org, display_name="Bob", email="bob@example.com")
    assert push().actions == {"customer.create": 2}
    with engine.begin() as conn:  # the app deletes Bob (no invoices), then adds Carol
        conn.execute(sa.delete(s.customers).where(s.customers.c.id == bob))
        carol = f.customer(conn, org, display_name="Carol", email="carol@example.com")
    assert push().actions["customer.create"] == 1
    assert sorted(o["DisplayName"] for o in books.objects("Customer")) == ["Ada", "Bob", "Carol"]
    with engine.connect() as conn:
        links = conn.execute(
            sa.select(s.qbo_sync_state.c.qbo_id).where(
                s.qbo_sync_state.c.entity_type == "customer", s.qbo_sync_state.c.entity_id == carol
            )
        ).all()
    carol_twin = next(o["Id"] for o in books.objects("Customer") if o["DisplayName"] == "Carol")
    assert [row.qbo_id for row in links] == [carol_twin]


def test_an_item_added_after_a_delete_is_created(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    with engine.begin() as conn:
        f.item(conn, org, name="Widget", description="blue")
        gadget = f.item(conn, org, name="Gadget", description="red")
    assert push().actions == {"item.create": 2}
    with engine.begin() as conn:
        conn.execute(sa.delete(s.items).where(s.items.c.id == gadget))
        f.item(conn, org, name="Sprocket", description="green")
    assert push().actions["item.create"] == 1
    assert sorted(o["Name"] for o in books.objects("Item")) == ["Gadget", "Sprocket", "Widget"]
