"""Customers and items: sparse updates of what Batchly changed, 5010 re-merge, 6240 link or review, coalescing."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import QuickBooksClient, WriteOp
from batchly_pipelines.services.push.organization import PushStats
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.conflicts import list_conflicts
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.factories import queue_rows
from batchly_pipelines_tests.support.push import Books, queue_status, update


def _customer_in_qbo(books: Books) -> dict:
    [customer] = books.objects("Customer")
    return customer


def _pushed_customer(engine: Engine, org: int, push: Callable[..., PushStats], **values: str) -> int:
    with engine.begin() as conn:
        customer = f.customer(conn, org, email="zoe@example.com", phone="555-0100", **values)
    assert push().actions == {"customer.create": 1}
    return customer


def test_customer_update_sends_only_the_changed_fields(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, sent: list[WriteOp]
) -> None:
    customer = _pushed_customer(engine, org, push, notes="VIP")
    update(engine, s.customers, customer, email="zoe@new.example.com")

    assert push().actions == {"customer.update": 1}

    body = sent[-1].body
    assert set(body) == {"Id", "SyncToken", "sparse", "PrimaryEmailAddr"} and body["sparse"] is True
    qbo = _customer_in_qbo(books)
    assert qbo["PrimaryEmailAddr"]["Address"] == "zoe@new.example.com"
    assert qbo["Notes"] == "VIP" and qbo["SyncToken"] == "1"


def test_changing_one_address_line_keeps_the_rest_of_the_address(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, sent: list[WriteOp]
) -> None:
    address = {
        "bill_line1": "1 King's Rd",
        "bill_city": "Boise",
        "bill_region": "ID",
        "bill_postal_code": "83702",
    }
    customer = _pushed_customer(engine, org, push, **address)
    update(engine, s.customers, customer, bill_city="Coeur d'Alene")

    assert push().actions == {"customer.update": 1}

    assert set(sent[-1].body) == {"Id", "SyncToken", "sparse", "BillAddr"}
    bill = _customer_in_qbo(books)["BillAddr"]
    assert (bill["Line1"], bill["City"], bill["CountrySubDivisionCode"], bill["PostalCode"]) == (
        "1 King's Rd",
        "Coeur d'Alene",
        "ID",
        "83702",
    )


def test_ten_edits_coalesce_into_one_push_of_the_latest_state(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, sent: list[WriteOp]
) -> None:
    customer = _pushed_customer(engine, org, push)
    for n in range(10):
        update(engine, s.customers, customer, notes=f"edit {n}")
    with engine.connect() as conn:
        pending = [r for r in queue_rows(conn) if r["status"] == "pending"]
    assert [(r["entity_id"], r["change_count"]) for r in pending] == [(customer, 10)]

    assert push().actions == {"customer.update": 1}
    assert len(sent) == 2  # the create, then one update
    assert _customer_in_qbo(books)["Notes"] == "edit 9"


def test_stale_sync_token_rereads_remerges_and_retries(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, sent: list[WriteOp]
) -> None:
    customer = _pushed_customer(engine, org, push)
    qbo_id = _customer_in_qbo(books)["Id"]
    books.act(
        action="update_customer", customer_id=qbo_id, fields={"PrimaryPhone": {"FreeFormNumber": "555-0199"}}
    )
    update(engine, s.customers, customer, email="zoe@new.example.com")

    assert push().actions == {"customer.update": 1}

    assert [op.body["SyncToken"] for op in sent[1:]] == ["0", "1"]  # stale, then the re-read token
    qbo = _customer_in_qbo(books)
    assert qbo["PrimaryEmailAddr"]["Address"] == "zoe@new.example.com"
    assert qbo["PrimaryPhone"]["FreeFormNumber"] == "555-0199"
    with engine.connect() as conn:
        row = conn.execute(sa.select(s.customers).where(s.customers.c.id == customer)).mappings().one()
        assert row["phone"] == "555-0199"  # QuickBooks' change came back with the merge
        assert list_conflicts(conn, open_only=False) == []


def test_same_field_changed_on_both_sides_is_a_recorded_conflict(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    customer = _pushed_customer(engine, org, push)
    update(engine, s.customers, customer, email="batchly@example.com")
    qbo_id = _customer_in_qbo(books)["Id"]
    books.act(
        action="update_customer",
        customer_id=qbo_id,
        fields={"PrimaryEmailAddr": {"Address": "qbo@example.com"}},
    )

    push()

    with engine.connect() as conn:
        [conflict] = list_conflicts(conn, open_only=False)
        email = conn.execute(sa.select(s.customers.c.email).where(s.customers.c.id == customer)).scalar()
    assert (conflict["field"], conflict["batchly_value"], conflict["qbo_value"]) == (
        "email",
        "batchly@example.com",
        "qbo@example.com",
    )
    assert conflict["resolution"] == "quickbooks"  # QuickBooks' edit is the newer one
    assert email == "qbo@example.com" == _customer_in_qbo(books)["PrimaryEmailAddr"]["Address"]


def test_duplicate_name_links_the_same_customer(
    engine: Engine, org: int, client: QuickBooksClient, push: Callable[..., PushStats], books: Books
) -> None:
    body = {"DisplayName": "Zoë O'Brien", "PrimaryEmailAddr": {"Address": "ZOE@example.com"}}
    [existing] = client.write_batch([WriteOp("x", "Customer", "create", body, "pre-existing-customer")])
    assert existing.entity_obj is not None

    stats = _link_or_review(engine, org, push)

    assert stats.actions == {"customer.link": 1}
    assert [c["Id"] for c in books.objects("Customer")] == [existing.entity_obj["Id"]]
    with engine.connect() as conn:
        qbo_id = conn.execute(sa.select(s.customers.c.qbo_id)).scalar()
    assert qbo_id == existing.entity_obj["Id"]


def test_duplicate_name_of_another_customer_goes_to_review(
    engine: Engine, org: int, client: QuickBooksClient, push: Callable[..., PushStats], books: Books
) -> None:
    body = {"DisplayName": "Zoë O'Brien", "PrimaryEmailAddr": {"Address": "someone.else@example.com"}}
    client.write_batch([WriteOp("x", "Customer", "create", body, "pre-existing-other")])

    stats = _link_or_review(engine, org, push)

    assert stats.actions == {"customer.failed": 1} and stats.dead == 1
    assert len(books.objects("Customer")) == 1
    with engine.connect() as conn:
        [conflict] = list_conflicts(conn)
        customer_id = conn.execute(sa.select(s.customers.c.id)).scalar_one()
    assert (conflict["entity_id"], conflict["field"], conflict["resolution"]) == (
        customer_id,
        "display_name",
        "pending_review",
    )
    status, error = queue_status(engine, "customer", customer_id)
    assert status == "dead" and "not the same customer" in (error or "")


def _link_or_review(engine: Engine, org: int, push: Callable[..., PushStats]) -> PushStats:
    with engine.begin() as conn:
        f.customer(conn, org, display_name="Zoë O'Brien", email="zoe@example.com")
    return push()


def test_item_pushes_its_description_only(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, sent: list[WriteOp]
) -> None:
    with engine.begin() as conn:
        item = f.item(conn, org, name="Espresso", unit_price="18.50", description="Beans")
    assert push().actions == {"item.create": 1}
    update(engine, s.items, item, description="Single-origin beans", unit_price=Decimal("99.00"), sku="NEW")

    assert push().actions == {"item.update": 1}

    assert set(sent[-1].body) == {"Id", "SyncToken", "sparse", "Description"}
    [qbo] = [i for i in books.objects("Item") if i["Name"] == "Espresso"]
    assert qbo["Description"] == "Single-origin beans"
    assert qbo["UnitPrice"] == Decimal("18.50") and "Sku" not in qbo


def test_invalid_customer_is_dead_lettered_with_the_field_named(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    with engine.begin() as conn:
        bad = f.customer(conn, org, display_name="Acme: Ltd")
        good = f.customer(conn, org, display_name="Acme Ltd")

    stats = push()

    assert stats.actions == {"customer.create": 1, "customer.failed": 1}
    assert [c["DisplayName"] for c in books.objects("Customer")] == ["Acme Ltd"]
    assert queue_status(engine, "customer", good) == ("done", None)
    status, error = queue_status(engine, "customer", bad)
    assert (
        status == "dead"
        and error == f"customer {bad} display_name: must not contain ':', a tab or a line break"
    )
