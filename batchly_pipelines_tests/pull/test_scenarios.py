"""The pull's scenario suite (issue 5): each ends exactly where DESIGN.md §1 says, with no echo pushes."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import sqlalchemy as sa

from batchly_pipelines.rules.mapping import decode_snapshot
from batchly_pipelines.rules.merge import ITEM_POLICY, changes_to_push
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.db import sync_transaction
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines.store.sync_state import load_states
from batchly_pipelines_tests.support import factories
from batchly_pipelines_tests.support.pull import Company, open_conflicts, queue


def _app_update(company: Company, table: sa.Table, row_id: int, **values: object) -> None:
    """An edit made in the Batchly app (it enqueues a push through the outbox trigger)."""
    with company.engine.begin() as conn:
        conn.execute(sa.update(table).where(table.c.id == row_id).values(**values))


def _conflicts(company: Company) -> list[dict[str, object]]:
    return company.rows(s.sync_conflicts)


def test_new_quickbooks_records_are_created_and_a_second_pull_changes_nothing(company: Company) -> None:
    ada = company.qbo.customer("Ada O'Lovelace", PrimaryEmailAddr={"Address": "ada@example.com"})
    company.qbo.item("Consulting", "150.00", Description="By the hour")
    first = company.pull()
    assert (first.batchly_customers.created, first.batchly_items.created) == (1, 1)
    customer = company.row(s.customers, qbo_id=ada["Id"])
    assert (customer["display_name"], customer["email"], customer["is_active"]) == (
        "Ada O'Lovelace",
        "ada@example.com",
        True,
    )
    item = company.row(s.items, name="Consulting")
    assert (item["unit_price"], item["description"]) == (Decimal("150.00"), "By the hour")

    before = (company.rows(s.customers), company.rows(s.items), company.rows(s.qbo_sync_state))
    second = company.pull()
    assert (second.customers.changed, second.items.changed, second.payments.changed) == (0, 0, 0)
    assert second.batchly_customers.examined == second.batchly_items.examined == 0
    assert (company.rows(s.customers), company.rows(s.items), company.rows(s.qbo_sync_state)) == before
    assert queue(company.engine) == []  # nothing the pull wrote echoes back as a push


def test_an_edit_on_one_side_is_taken_from_that_side(company: Company) -> None:
    ada = company.qbo.customer("Ada", PrimaryPhone={"FreeFormNumber": "555-0100"})
    company.pull()
    company.act(
        "update_customer", customer_id=ada["Id"], fields={"PrimaryPhone": {"FreeFormNumber": "555-0199"}}
    )
    result = company.pull()
    assert result.batchly_customers.updated == 1
    assert company.row(s.customers, qbo_id=ada["Id"])["phone"] == "555-0199"
    assert _conflicts(company) == [] and queue(company.engine) == []

    row = company.row(s.customers, qbo_id=ada["Id"])
    _app_update(company, s.customers, row["id"], notes="prefers e-mail")
    company.pull()  # QuickBooks did not change: the Batchly edit stays, for the push to send
    assert company.row(s.customers, qbo_id=ada["Id"])["notes"] == "prefers e-mail"
    assert [(q["entity_type"], q["entity_id"]) for q in queue(company.engine)] == [("customer", row["id"])]


def test_edits_to_different_fields_on_both_sides_are_both_kept(company: Company) -> None:
    ada = company.qbo.customer("Ada", PrimaryEmailAddr={"Address": "ada@old.example"})
    company.pull()
    row = company.row(s.customers, qbo_id=ada["Id"])
    _app_update(company, s.customers, row["id"], notes="VIP")
    company.act(
        "update_customer", customer_id=ada["Id"], fields={"PrimaryEmailAddr": {"Address": "ada@new.example"}}
    )
    company.pull()
    after = company.row(s.customers, qbo_id=ada["Id"])
    assert (after["email"], after["notes"]) == ("ada@new.example", "VIP")
    assert _conflicts(company) == []
    with company.engine.connect() as conn:
        [state] = load_states(conn, company.org, "customer")
    base = decode_snapshot("customer", state.base)
    assert base["email"] == "ada@new.example" and base["notes"] is None  # notes still to push
    assert len(queue(company.engine)) == 1  # the app's own edit, nothing added by the pull


def test_the_same_field_changed_on_both_sides_goes_to_the_newer_change_with_a_conflict_row(
    company: Company,
) -> None:
    ada = company.qbo.customer("Ada", Notes="base")
    company.pull()
    row = company.row(s.customers, qbo_id=ada["Id"])
    _app_update(
        company, s.customers, row["id"], notes="from Batchly", updated_at=utcnow() - timedelta(hours=1)
    )
    company.act("update_customer", customer_id=ada["Id"], fields={"Notes": "from QuickBooks"})
    company.pull()
    assert company.row(s.customers, qbo_id=ada["Id"])["notes"] == "from QuickBooks"
    [conflict] = _conflicts(company)
    assert (conflict["field"], conflict["resolution"]) == ("notes", "quickbooks")
    assert (conflict["base_value"], conflict["batchly_value"], conflict["qbo_value"]) == (
        "base",
        "from Batchly",
        "from QuickBooks",
    )
    assert (conflict["entity_id"], conflict["qbo_id"]) == (row["id"], ada["Id"])


def test_batchly_wins_the_same_field_when_its_change_is_newer(company: Company) -> None:
    ada = company.qbo.customer("Ada", Notes="base")
    company.pull()
    row = company.row(s.customers, qbo_id=ada["Id"])
    with company.qbo.admin.clock_advanced(-3600):  # QuickBooks' edit an hour before Batchly's
        company.act("update_customer", customer_id=ada["Id"], fields={"Notes": "from QuickBooks"})
    _app_update(company, s.customers, row["id"], notes="from Batchly")
    company.pull()
    assert company.row(s.customers, qbo_id=ada["Id"])["notes"] == "from Batchly"
    [conflict] = _conflicts(company)
    assert conflict["resolution"] == "batchly"
    with company.engine.connect() as conn:
        [state] = load_states(conn, company.org, "customer")
    assert (
        decode_snapshot("customer", state.base)["notes"] == "from QuickBooks"
    )  # the push still has to send it


def test_a_needs_review_field_keeps_one_open_conflict_over_repeated_pulls(company: Company) -> None:
    ada = company.qbo.customer("Ada", Notes="base")
    company.pull()
    row = company.row(s.customers, qbo_id=ada["Id"])
    _app_update(company, s.customers, row["id"], notes="from Batchly")
    company.act("update_customer", customer_id=ada["Id"], fields={"Notes": "from QuickBooks"})
    company.pull(review_fields=["notes"])
    company.act("update_customer", customer_id=ada["Id"], fields={"GivenName": "Augusta"})
    company.pull(review_fields=["notes"])
    after = company.row(s.customers, qbo_id=ada["Id"])
    assert (after["notes"], after["given_name"]) == ("from Batchly", "Augusta")  # neither side applied
    [conflict] = open_conflicts(company.engine)
    assert (conflict["field"], conflict["qbo_value"], conflict["batchly_value"]) == (
        "notes",
        "from QuickBooks",
        "from Batchly",
    )


def test_a_review_closes_itself_when_both_sides_come_to_agree(company: Company) -> None:
    ada = company.qbo.customer("Ada", Notes="base")
    company.pull()
    row = company.row(s.customers, qbo_id=ada["Id"])
    _app_update(company, s.customers, row["id"], notes="agreed")
    company.act("update_customer", customer_id=ada["Id"], fields={"Notes": "from QuickBooks"})
    company.pull(review_fields=["notes"])
    [conflict] = open_conflicts(company.engine)
    company.act(
        "update_customer", customer_id=ada["Id"], fields={"Notes": "agreed"}
    )  # the accountant gives in
    company.pull(review_fields=["notes"])
    assert open_conflicts(company.engine) == []
    closed = company.row(s.sync_conflicts, id=conflict["id"])
    assert (closed["resolution"], closed["resolved_value"]) == ("value", "agreed")
    assert closed["resolved_by"].startswith("sync")


def test_a_customer_deactivated_in_quickbooks_is_deactivated_never_deleted(company: Company) -> None:
    ada = company.qbo.customer("Ada")
    company.pull()
    company.act("deactivate", entity="Customer", id=ada["Id"])
    company.pull()
    assert company.row(s.customers, qbo_id=ada["Id"])["is_active"] is False
    assert queue(company.engine) == []


def test_price_changed_in_quickbooks_while_description_changed_in_batchly(company: Company) -> None:
    widget = company.qbo.item("Widget", "10.00", Description="Old words")
    company.pull()
    item = company.row(s.items, qbo_id=widget["Id"])
    _app_update(company, s.items, item["id"], description="New words")
    company.act("set_item_price", item_id=widget["Id"], unit_price="12.50")
    company.pull()
    after = company.row(s.items, qbo_id=widget["Id"])
    assert (after["unit_price"], after["description"]) == (Decimal("12.50"), "New words")
    assert _conflicts(company) == []  # each side changed the field it owns
    with company.engine.connect() as conn:
        [state] = load_states(conn, company.org, "item")
    fields = {name: after[name] for name in ITEM_POLICY.fields}
    base = decode_snapshot("item", state.base)
    assert changes_to_push(base, fields, policy=ITEM_POLICY) == {
        "description": "New words"
    }  # never the price
    assert [(q["entity_type"], q["entity_id"]) for q in queue(company.engine)] == [("item", item["id"])]


def test_a_batchly_price_edit_is_reverted_because_quickbooks_owns_prices(company: Company) -> None:
    widget = company.qbo.item("Widget", "10.00")
    company.pull()
    item = company.row(s.items, qbo_id=widget["Id"])
    _app_update(company, s.items, item["id"], unit_price=Decimal("99.00"))
    company.act("update", entity="Item", id=widget["Id"], fields={"Sku": "W-1"})
    company.pull()
    after = company.row(s.items, qbo_id=widget["Id"])
    assert (after["unit_price"], after["sku"]) == (Decimal("10.00"), "W-1")
    [conflict] = _conflicts(company)
    assert (conflict["field"], conflict["resolution"]) == ("unit_price", "quickbooks")


def test_unlinked_batchly_customers_are_linked_when_the_same_and_flagged_otherwise(company: Company) -> None:
    with company.engine.begin() as conn:
        same = factories.customer(conn, company.org, "Zoë O'Brien", email="ZOE@example.com")
        other = factories.customer(conn, company.org, "Joe's Garage", email="joe@garage.example")
    zoe = company.qbo.customer(
        "Zoë O'Brien", PrimaryEmailAddr={"Address": "zoe@example.com"}, Notes="from QBO"
    )
    joe = company.qbo.customer("Joe's Garage", PrimaryEmailAddr={"Address": "owner@elsewhere.example"})
    for _ in range(2):
        result = company.pull()
    assert company.row(s.customers, id=same)["qbo_id"] == zoe["Id"]
    assert company.row(s.customers, id=same)["notes"] == "from QBO"
    assert company.row(s.customers, id=other)["qbo_id"] is None  # not linked, not duplicated
    assert len(company.rows(s.customers)) == 2 and result.batchly_customers.created == 0
    [review] = open_conflicts(company.engine)
    assert (review["field"], review["qbo_id"], review["batchly_value"]) == ("link", joe["Id"], str(other))


def _linked_invoice(company: Company, due: date) -> tuple[dict[str, object], int]:
    """A QuickBooks invoice of 100.00 and its Batchly twin, as the push leaves them."""
    customer = company.qbo.customer("Payer")
    item = company.qbo.item("Service", "100.00")
    qbo_invoice = company.qbo.invoice(customer, item, "100.00", DueDate=due.isoformat())
    company.pull()
    customer_id = company.row(s.customers, qbo_id=customer["Id"])["id"]
    item_id = company.row(s.items, qbo_id=item["Id"])["id"]
    with sync_transaction(company.engine) as conn:
        invoice_id = factories.invoice(conn, company.org, customer_id, item_id, doc_number="D-1", lines=1)
        conn.execute(
            sa.update(s.invoices)
            .where(s.invoices.c.id == invoice_id)
            .values(
                qbo_id=qbo_invoice["Id"], total_amount=Decimal("100.00"), due_date=due, sync_status="synced"
            )
        )
    return qbo_invoice, invoice_id


def test_payments_set_invoice_status_and_a_deleted_payment_reverts_it(company: Company) -> None:
    qbo_invoice, invoice_id = _linked_invoice(company, date.today() + timedelta(days=30))
    payment = company.act("record_payment", invoice_id=qbo_invoice["Id"], amount="40.00")["Payment"]
    company.pull()
    partial = company.row(s.invoices, id=invoice_id)
    assert (partial["payment_status"], partial["amount_paid"], partial["amount_due"]) == (
        "partial",
        Decimal("40.00"),
        Decimal("60.00"),
    )
    assert partial["qb_payment_id"] == payment["Id"]
    company.act("record_payment", invoice_id=qbo_invoice["Id"])
    company.pull()
    assert company.row(s.invoices, id=invoice_id)["payment_status"] == "paid"

    company.act("delete_payment", payment_id=payment["Id"])
    result = company.pull()
    assert result.payments.deleted == 1
    reverted = company.row(s.invoices, id=invoice_id)
    assert (reverted["payment_status"], reverted["amount_paid"], reverted["amount_due"]) == (
        "partial",
        Decimal("60.00"),
        Decimal("40.00"),
    )
    assert reverted["qb_payment_id"] != payment["Id"]
    again = company.pull()
    assert again.batchly_invoices.examined == 0
    assert queue(company.engine) == []


def test_a_voided_invoice_and_an_overdue_one_without_any_quickbooks_call(company: Company) -> None:
    qbo_invoice, invoice_id = _linked_invoice(company, date.today() - timedelta(days=3))
    company.pull()
    assert company.row(s.invoices, id=invoice_id)["payment_status"] == "overdue"
    company.act("void_invoice", invoice_id=qbo_invoice["Id"])
    company.pull()
    voided = company.row(s.invoices, id=invoice_id)
    assert (voided["payment_status"], voided["amount_due"]) == ("voided", Decimal("0.00"))
