"""The push merges like the pull (issue 10, failures 3, 4, 8 and 9): cleared values survive the 5010 re-merge and
the first link, the first link does not wipe newer Batchly values, QuickBooks-owned item fields edited in Batchly are
reverted (never acknowledged as pushed), review fields are honoured, and every conflict the push settles is recorded
with its resolution, logged and counted."""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import QuickBooksClient, WriteOp
from batchly_pipelines.services.pull.resolve import resolve_conflicts
from batchly_pipelines.services.push.organization import PushStats
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.conflicts import list_conflicts
from batchly_pipelines.store.review_fields import set_review_fields
from batchly_pipelines_tests.push.test_push_dagster import _log_lines, _push_run
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.push import Books, update


def _row(engine: Engine, table: sa.Table, row_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(table).where(table.c.id == row_id)).mappings().one())


def _conflicts(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return list_conflicts(conn, open_only=False)


def _log(engine: Engine, entity_type: str, entity_id: int) -> list[dict[str, Any]]:
    log = s.sync_log.c
    query = sa.select(s.sync_log).where(log.entity_type == entity_type, log.entity_id == entity_id)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query.order_by(log.id)).mappings()]


def _one(books: Books, entity: str) -> dict[str, Any]:
    [obj] = books.objects(entity)
    return obj


def _pushed_customer(engine: Engine, org: int, push: Callable[..., PushStats], **values: Any) -> int:
    with engine.begin() as conn:
        customer = f.customer(conn, org, email="zoe@example.com", **values)
    assert push().actions == {"customer.create": 1}
    return customer


def test_a_field_cleared_in_quickbooks_stays_cleared_through_the_5010_remerge(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    customer = _pushed_customer(engine, org, push, phone="555-0100", notes="VIP")
    qbo_id = _one(books, "Customer")["Id"]
    books.act(action="update_customer", customer_id=qbo_id, fields={"PrimaryPhone": {"FreeFormNumber": ""}})
    update(engine, s.customers, customer, email="zoe@new.example.com")

    assert push().actions == {"customer.update": 1}  # stale token, re-read, merged, sent again

    assert _row(engine, s.customers, customer)["phone"] is None  # the clear came back to Batchly
    update(engine, s.customers, customer, notes="VIP, pays early")  # an unrelated Batchly edit
    assert push().actions == {"customer.update": 1}
    qbo = _one(books, "Customer")
    assert qbo.get("PrimaryPhone", {}).get("FreeFormNumber") in (None, "")  # not resurrected
    assert qbo["Notes"] == "VIP, pays early"


def _existing_in_qbo(client: QuickBooksClient, body: dict[str, Any]) -> dict[str, Any]:
    [created] = client.write_batch([WriteOp("x", "Customer", "create", body, f"pre-{body['DisplayName']}")])
    assert created.entity_obj is not None
    return dict(created.entity_obj)


def test_the_push_side_first_link_keeps_newer_batchly_values(
    engine: Engine, org: int, client: QuickBooksClient, push: Callable[..., PushStats], books: Books
) -> None:
    """Failure 8 through the push: QuickBooks already has the customer (older); Batchly's phone, notes and city —
    values QuickBooks lacks — are newer and must survive the link and reach QuickBooks."""
    with books.admin.clock_advanced(-120):
        _existing_in_qbo(client, {"DisplayName": "Zoë", "PrimaryEmailAddr": {"Address": "zoe@example.com"}})
    with engine.begin() as conn:
        customer = f.customer(
            conn,
            org,
            display_name="Zoë",
            email="zoe@example.com",
            phone="555",
            notes="ours",
            bill_city="Boise",
        )

    assert push().actions == {"customer.link": 1}

    row = _row(engine, s.customers, customer)
    assert (row["phone"], row["notes"], row["bill_city"]) == ("555", "ours", "Boise")
    qbo = _one(books, "Customer")
    assert (qbo["PrimaryPhone"]["FreeFormNumber"], qbo["Notes"], qbo["BillAddr"]["City"]) == (
        "555",
        "ours",
        "Boise",
    )
    settled = {(c["field"], c["resolution"]) for c in _conflicts(engine)}
    assert settled == {("phone", "batchly"), ("notes", "batchly"), ("bill_city", "batchly")}


def test_the_push_side_first_link_takes_a_newer_quickbooks_clear_and_never_resurrects_it(
    engine: Engine, org: int, client: QuickBooksClient, push: Callable[..., PushStats], books: Books
) -> None:
    with engine.begin() as conn:
        customer = f.customer(conn, org, display_name="Zoë", email="zoe@example.com", phone="555")
    with books.admin.clock_advanced(120):  # QuickBooks' record is newer: it has no phone
        _existing_in_qbo(client, {"DisplayName": "Zoë", "PrimaryEmailAddr": {"Address": "zoe@example.com"}})
    with engine.begin() as conn:  # Batchly's phone is from before QuickBooks' record
        conn.execute(
            sa.update(s.batchly_field_changes)
            .where(s.batchly_field_changes.c.entity_id == customer)
            .values(changed_at=s.utcnow().replace(year=2020))
        )
        conn.execute(
            sa.update(s.customers)
            .where(s.customers.c.id == customer)
            .values(created_at=s.utcnow().replace(year=2020))
        )

    assert push().actions == {"customer.link": 1}

    assert _row(engine, s.customers, customer)["phone"] is None
    update(engine, s.customers, customer, notes="later")
    push()
    assert _one(books, "Customer").get("PrimaryPhone") in (None, {}, {"FreeFormNumber": ""})


def test_a_batchly_edit_of_a_quickbooks_owned_item_field_is_reverted_not_acknowledged(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    with engine.begin() as conn:
        item = f.item(conn, org, name="Espresso", unit_price="18.50", sku="E-1", description="Beans")
    assert push().actions == {"item.create": 1}
    update(engine, s.items, item, unit_price=Decimal("99.00"), name="Espresso XL", sku=None, is_active=False)

    stats = push()

    assert "item.skip" not in stats.actions
    assert stats.actions == {"item.revert": 1}
    row = _row(engine, s.items, item)
    assert (row["unit_price"], row["name"], row["sku"], row["is_active"]) == (
        Decimal("18.50"),
        "Espresso",
        "E-1",
        True,
    )
    qbo = _one(books, "Item")
    assert (qbo["UnitPrice"], qbo["Name"], qbo["Sku"], qbo["Active"]) == (
        Decimal("18.50"),
        "Espresso",
        "E-1",
        True,
    )
    conflicts = {
        (c["field"], c["batchly_value"], c["qbo_value"], c["resolution"]) for c in _conflicts(engine)
    }
    assert conflicts == {
        ("unit_price", "99.00", "18.50", "quickbooks"),
        ("name", "Espresso XL", "Espresso", "quickbooks"),
        ("sku", None, "E-1", "quickbooks"),
        ("is_active", False, True, "quickbooks"),
    }
    [entry] = [e for e in _log(engine, "item", item) if e["action"] == "revert"]
    assert "QuickBooks owns" in entry["message"] and "unit_price" in entry["message"]
    assert stats.conflicts == {"item.quickbooks": 4}


def test_an_invalid_quickbooks_owned_field_never_blocks_the_batchly_owned_description(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    with engine.begin() as conn:
        item = f.item(conn, org, name="Espresso", description="Beans")
    push()
    update(engine, s.items, item, unit_price=Decimal("-1.00"), description="Single-origin beans")

    stats = push()

    assert stats.actions == {"item.update": 1} and stats.dead == 0
    assert _one(books, "Item")["Description"] == "Single-origin beans"
    assert _row(engine, s.items, item)["unit_price"] == Decimal(
        "10.10"
    )  # QuickBooks owns the price: reverted


def test_review_fields_are_honoured_by_the_push(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    """Failure 9: with notes under review, a both-sides edit of notes opens a review and neither side is written,
    while the other field Batchly changed is pushed."""
    with engine.begin() as conn:
        set_review_fields(conn, org, "customer", ["notes"])
    customer = _pushed_customer(engine, org, push, notes="base")
    qbo_id = _one(books, "Customer")["Id"]
    books.act(action="update_customer", customer_id=qbo_id, fields={"Notes": "theirs"})
    update(engine, s.customers, customer, notes="ours", email="zoe@new.example.com")

    stats = push()

    assert stats.actions == {"customer.update": 1}
    qbo = _one(books, "Customer")
    assert qbo["Notes"] == "theirs" and qbo["PrimaryEmailAddr"]["Address"] == "zoe@new.example.com"
    assert _row(engine, s.customers, customer)["notes"] == "ours"
    [review] = _conflicts(engine)
    assert (review["field"], review["batchly_value"], review["qbo_value"], review["resolution"]) == (
        "notes",
        "ours",
        "theirs",
        "pending_review",
    )
    update(engine, s.customers, customer, notes="ours, edited again")
    push()
    [review] = _conflicts(engine)  # still the one open review; the field is not written until it is resolved
    assert review["resolution"] == "pending_review"
    assert _one(books, "Customer")["Notes"] == "theirs"


def test_a_billaddr_member_under_review_is_not_sent_with_an_edit_of_another_member(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    """QuickBooks replaces BillAddr whole, so a sparse update of bill_line1 sends every member: the one under an
    open review (bill_city) must carry QuickBooks' value, not Batchly's."""
    with engine.begin() as conn:
        set_review_fields(conn, org, "customer", ["bill_city"])
        customer = f.customer(conn, org, email="zoe@example.com", bill_line1="1 Main St", bill_city="Base")
    assert push().actions == {"customer.create": 1}
    qbo_id = _one(books, "Customer")["Id"]
    books.act(
        action="update_customer",
        customer_id=qbo_id,
        fields={"BillAddr": {**_one(books, "Customer")["BillAddr"], "City": "Cambridge"}},
    )
    update(engine, s.customers, customer, bill_city="Boston", email="zoe@new.example.com")
    push()  # opens the review on bill_city, pushes the e-mail
    [review] = _conflicts(engine)
    assert (review["field"], review["resolution"]) == ("bill_city", "pending_review")
    assert _one(books, "Customer")["BillAddr"]["City"] == "Cambridge"

    update(engine, s.customers, customer, bill_line1="2 Side St")  # another member of the same address
    push()

    bill = _one(books, "Customer")["BillAddr"]
    assert (bill["Line1"], bill["City"]) == ("2 Side St", "Cambridge")
    assert _row(engine, s.customers, customer)["bill_city"] == "Boston"
    [review] = _conflicts(engine)
    assert (review["batchly_value"], review["qbo_value"], review["resolution"]) == (
        "Boston",
        "Cambridge",
        "pending_review",
    )


def test_a_billaddr_member_under_review_is_not_sent_by_the_5010_remerge_either(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    with engine.begin() as conn:
        set_review_fields(conn, org, "customer", ["bill_city"])
        customer = f.customer(conn, org, email="zoe@example.com", bill_line1="1 Main St", bill_city="Base")
    push()
    qbo_id = _one(books, "Customer")["Id"]
    books.act(
        action="update_customer",
        customer_id=qbo_id,
        fields={"BillAddr": {**_one(books, "Customer")["BillAddr"], "City": "Cambridge"}},
    )
    update(engine, s.customers, customer, bill_city="Boston", email="zoe@new.example.com")
    push()  # opens the review on bill_city
    books.act(
        action="update_customer", customer_id=qbo_id, fields={"Notes": "from QuickBooks"}
    )  # a newer token
    update(engine, s.customers, customer, bill_line1="2 Side St")

    push()  # 5010, re-merged against the current object

    qbo = _one(books, "Customer")
    assert (qbo["BillAddr"]["Line1"], qbo["BillAddr"]["City"], qbo["Notes"]) == (
        "2 Side St",
        "Cambridge",
        "from QuickBooks",
    )
    assert _row(engine, s.customers, customer)["bill_city"] == "Boston"
    [review] = _conflicts(engine)
    assert (review["field"], review["batchly_value"], review["qbo_value"], review["resolution"]) == (
        "bill_city",
        "Boston",
        "Cambridge",
        "pending_review",
    )
    push()  # nothing left to send, and the held field stays held
    assert _one(books, "Customer")["BillAddr"]["City"] == "Cambridge"
    assert _row(engine, s.customers, customer)["bill_city"] == "Boston"


def test_a_conflict_the_push_settles_is_recorded_logged_and_counted(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    customer = _pushed_customer(engine, org, push, notes="base")
    qbo_id = _one(books, "Customer")["Id"]
    update(engine, s.customers, customer, notes="ours")
    with books.admin.clock_advanced(60):
        books.act(action="update_customer", customer_id=qbo_id, fields={"Notes": "theirs"})

    stats = push()

    [conflict] = _conflicts(engine)
    assert (conflict["field"], conflict["resolution"]) == ("notes", "quickbooks")
    assert stats.conflicts == {"customer.quickbooks": 1}
    [entry] = [e for e in _log(engine, "customer", customer) if e["action"] == "update"][-1:]
    assert "notes" in (entry["message"] or "") and "QuickBooks" in entry["message"]
    assert _row(engine, s.customers, customer)["notes"] == "theirs"


def test_a_review_the_push_opened_is_resolved_on_what_it_showed_and_the_choice_is_pushed(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    """No pull ever mirrored the customer: the review shows what the push read from QuickBooks, and resolving it for
    Batchly sends Batchly's value."""
    with engine.begin() as conn:
        set_review_fields(conn, org, "customer", ["notes"])
    customer = _pushed_customer(engine, org, push, notes="base")
    qbo_id = _one(books, "Customer")["Id"]
    books.act(action="update_customer", customer_id=qbo_id, fields={"Notes": "theirs"})
    update(engine, s.customers, customer, notes="ours")
    push()
    [review] = _conflicts(engine)

    [done] = resolve_conflicts(engine, winner="batchly", resolved_by="ana", conflict_ids=[review["id"]])

    assert (done.chosen, done.to_batchly, done.to_quickbooks) == ("ours", False, True)
    push()
    assert _one(books, "Customer")["Notes"] == "ours"
    assert _row(engine, s.customers, customer)["notes"] == "ours"


def test_the_push_job_reports_the_conflicts_it_settled(
    engine: Engine, org: int, push: Callable[..., PushStats], environment: None
) -> None:
    with engine.begin() as conn:
        item = f.item(conn, org, name="Espresso", unit_price="18.50")
    push()
    update(engine, s.items, item, unit_price=Decimal("99.00"))
    instance = DagsterInstance.ephemeral()

    result = _push_run(engine, instance, organization_id=org)

    assert result.success
    [output] = [
        e for e in result.all_events if e.event_type_value == "STEP_OUTPUT" and e.step_key == "push_records"
    ]
    assert output.event_specific_data.metadata["conflicts"].value == {"item.quickbooks": 1}
    [line] = [m for m in _log_lines(instance, result, logging.INFO) if m.startswith("conflicts settled")]
    assert line.endswith("item.quickbooks 1")
    [entry] = [e for e in _log(engine, "item", item) if e["action"] == "revert"]
    assert "unit_price" in entry["message"] and "QuickBooks owns" in entry["message"]


def test_a_merged_value_never_overwrites_a_batchly_edit_the_push_did_not_read(
    engine: Engine,
    org: int,
    client: QuickBooksClient,
    push: Callable[..., PushStats],
    books: Books,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """QuickBooks cleared the phone; the push's re-merge takes the clear — but the app set a new phone while the push
    was talking to QuickBooks: the app's phone stands (and is pushed next), the clear does not overwrite it."""
    customer = _pushed_customer(engine, org, push, phone="555-0100")
    qbo_id = _one(books, "Customer")["Id"]
    books.act(action="update_customer", customer_id=qbo_id, fields={"PrimaryPhone": {"FreeFormNumber": ""}})
    update(engine, s.customers, customer, email="zoe@new.example.com")
    write_batch = client.write_batch

    def app_edits_meanwhile(batch: Any, **options: Any) -> Any:
        update(engine, s.customers, customer, phone="555-0777")
        monkeypatch.setattr(client, "write_batch", write_batch)
        return write_batch(batch, **options)

    monkeypatch.setattr(client, "write_batch", app_edits_meanwhile)
    push()

    assert _row(engine, s.customers, customer)["phone"] == "555-0777"
    push()
    assert _one(books, "Customer")["PrimaryPhone"]["FreeFormNumber"] == "555-0777"
