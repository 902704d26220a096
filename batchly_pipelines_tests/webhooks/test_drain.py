"""Draining the inbox into Batchly: targeted ``Id IN`` reads, the newest version wins whatever the order, deletions
and voids, and events marked done only once the run's writes are committed."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.quickbooks.errors import ServerError
from batchly_pipelines.services.webhooks.drain import Drain, RealmNotConnected, WrongCompany, drain_realm
from batchly_pipelines.services.webhooks.events import parse_delivery
from batchly_pipelines.services.webhooks.intake import UNKNOWN_REALM, Intake, record_delivery
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.connections import ConnectionStore, unlink_organization
from batchly_pipelines_tests.pull.test_completeness import _pushed_invoice, _refund
from batchly_pipelines_tests.support.pull import Company, link_invoices_as_pushed, queue
from batchly_pipelines_tests.support.quickbooks import SandboxTokens
from batchly_pipelines_tests.support.sandbox_client import Qbo
from batchly_pipelines_tests.support.webhooks import MOMENT, change, connect, inbox, legacy, statuses
from qbo_sandbox.state import Event

ClientFor = Callable[[int, str], QuickBooksClient]
PAYMENT = ("payment_status", "amount_paid", "amount_due", "qb_payment_id")


def notify(company: Company, *changes: Event) -> Intake:
    """Deliver changes of the company's realm to the inbox, as the receiver does."""
    return record_delivery(company.engine, parse_delivery(legacy(*changes)))


def changed(company: Company, entity: str, obj: dict[str, Any], operation: str = "Update") -> Event:
    """The event of one change QuickBooks made (its time is the object's own LastUpdatedTime, when it has one)."""
    stamp = obj.get("MetaData", {}).get("LastUpdatedTime")
    at = MOMENT if stamp is None else MOMENT.fromisoformat(stamp)
    return change(company.qbo.realm_id, entity, str(obj["Id"]), operation, at)


def drain(company: Company, client_for: ClientFor, run_id: str = "run-1") -> Drain:
    return drain_realm(company.engine, company.qbo.realm_id, run_id, client_for)


def mirrored(company: Company, entity: str, qbo_id: str) -> dict[str, Any]:
    with company.engine.connect() as conn:
        row = conn.execute(
            sa.select(s.qbo_mirror).where(
                s.qbo_mirror.c.organization_id == company.org,
                s.qbo_mirror.c.entity_type == entity,
                s.qbo_mirror.c.qbo_id == qbo_id,
            )
        )
        return dict(row.mappings().one())


def update(company: Company, entity: str, qbo_id: str, **fields: Any) -> dict[str, Any]:
    """An edit made in QuickBooks' UI; returns the new version."""
    return dict(company.act("update", entity=entity, id=qbo_id, fields=fields)[entity])


class ReadsServedFrom(QuickBooksClient):
    """A client whose ``Id IN`` reads of some entities answer with given objects (a read made earlier, landing
    late), or fail."""

    def __init__(
        self, company: Company, answers: dict[str, list[dict[str, Any]]], fail: bool = False
    ) -> None:
        base = company.sandbox.base_url
        super().__init__(company.qbo.realm_id, base, SandboxTokens(base, company.qbo.realm_id))
        self.answers, self.fail = answers, fail

    def read_many(self, entity: str, ids: Iterable[str]) -> list[dict]:
        if self.fail:
            raise ServerError("QuickBooks answered 503", detail="query")
        if entity in self.answers:
            wanted = set(ids)
            return [obj for obj in self.answers[entity] if obj["Id"] in wanted]
        return super().read_many(entity, ids)


def test_notified_customers_and_items_reach_batchly_with_one_read_per_entity(
    company: Company, client_for: ClientFor
) -> None:
    ada, bob = company.qbo.customer("Ada"), company.qbo.customer("Bob")
    item = company.qbo.item("Hours", "80.00")
    intake = notify(
        company,
        changed(company, "Customer", ada, "Create"),
        changed(company, "Customer", bob, "Create"),
        changed(company, "Item", item, "Create"),
    )
    assert intake.stored == 3
    result = drain(company, client_for)
    assert (result.events, result.done) == (3, 3)
    [pull] = result.pulls
    assert pull.read == {"Customer": 2, "Item": 1} and pull.changed == {"Customer": 2, "Item": 1}
    assert pull.api_calls == 2  # one Id IN query per entity, whatever the number of events
    assert company.row(s.customers, qbo_id=ada["Id"])["display_name"] == "Ada"
    assert company.row(s.items, qbo_id=item["Id"])["unit_price"] == Decimal("80.00")
    rows = inbox(company.engine)
    assert statuses(rows) == ["done"] * 3 and {r["run_id"] for r in rows} == {"run-1"}
    assert all(r["processed_at"] is not None for r in rows)
    assert queue(company.engine) == []  # nothing echoes back as a push
    assert drain(company, client_for, "run-2").events == 0  # nothing left


def test_out_of_order_updates_the_newest_wins(company: Company, client_for: ClientFor) -> None:
    customer = company.qbo.customer("Ada")
    company.pull()
    first = update(company, "Customer", customer["Id"], Notes="first")
    second = update(company, "Customer", customer["Id"], Notes="second")
    realm = company.qbo.realm_id
    # (both edits may share a second: their events are told apart by the time Intuit stamps in milliseconds)
    notify(company, change(realm, "Customer", customer["Id"], "Update", MOMENT + timedelta(seconds=1)))
    drain(company, client_for, "run-1")  # the later event arrived first
    notify(company, change(realm, "Customer", customer["Id"], "Update", MOMENT))  # then the earlier one
    result = drain(company, client_for, "run-2")
    assert result.done == 1
    assert company.row(s.customers, qbo_id=customer["Id"])["notes"] == "second"
    assert first["SyncToken"] == "1"
    assert mirrored(company, "Customer", customer["Id"])["sync_token"] == second["SyncToken"] == "2"


def test_a_read_older_than_the_mirror_never_overwrites_it(company: Company) -> None:
    """A slower pull that read the previous version writes after a newer one: the mirror keeps the newest."""
    customer = company.qbo.customer("Ada")
    company.pull()
    old = update(company, "Customer", customer["Id"], Notes="old")
    new = update(company, "Customer", customer["Id"], Notes="new")
    company.pull()
    assert mirrored(company, "Customer", customer["Id"])["sync_token"] == new["SyncToken"]
    notify(company, changed(company, "Customer", old))
    result = drain(company, lambda org, realm: ReadsServedFrom(company, {"Customer": [old]}))
    assert result.pulls[0].stale == {"Customer": 1} and result.done == 1
    assert mirrored(company, "Customer", customer["Id"])["sync_token"] == new["SyncToken"]
    assert company.row(s.customers, qbo_id=customer["Id"])["notes"] == "new"


def _paid_invoice(
    company: Company, client_for: ClientFor, amount: str
) -> tuple[dict[str, Any], dict[str, Any], int]:
    """A QuickBooks invoice of 100.00 linked to its Batchly twin, then a payment of ``amount`` drained into it."""
    customer = company.qbo.customer("Payer")
    item = company.qbo.item("Service", "100.00")
    invoice = company.qbo.invoice(customer, item, "100.00", DueDate="2099-01-01")
    company.pull()
    link_invoices_as_pushed(company.engine, company.org, [invoice])
    payment = company.act("record_payment", invoice_id=invoice["Id"], amount=amount)["Payment"]
    notify(company, changed(company, "Payment", payment, "Create"))
    drain(company, client_for, "run-paid")
    invoice_id = company.row(s.invoices, qbo_id=invoice["Id"])["id"]
    return invoice, payment, invoice_id


def _payment_columns(company: Company, invoice_id: int) -> tuple[Any, ...]:
    row = company.row(s.invoices, id=invoice_id)
    return tuple(row[column] for column in PAYMENT)


def test_a_payment_event_alone_updates_the_invoice_it_applies_to(
    company: Company, client_for: ClientFor
) -> None:
    _, payment, invoice_id = _paid_invoice(company, client_for, "40.00")
    assert _payment_columns(company, invoice_id) == (
        "partial",
        Decimal("40.00"),
        Decimal("60.00"),
        payment["Id"],
    )


def test_a_stale_invoice_read_does_not_undo_a_payment(company: Company, client_for: ClientFor) -> None:
    invoice, payment, invoice_id = _paid_invoice(company, client_for, "100.00")
    assert _payment_columns(company, invoice_id)[0] == "paid"
    notify(company, changed(company, "Invoice", invoice))  # the invoice as it was before the payment
    drain(company, lambda org, realm: ReadsServedFrom(company, {"Invoice": [invoice]}), "run-late")
    assert _payment_columns(company, invoice_id) == (
        "paid",
        Decimal("100.00"),
        Decimal("0.00"),
        payment["Id"],
    )


def test_a_deleted_payment_reverts_its_invoice_from_the_payment_event_alone(
    company: Company, client_for: ClientFor
) -> None:
    _, payment, invoice_id = _paid_invoice(company, client_for, "40.00")
    company.act("delete_payment", payment_id=payment["Id"])
    # only the payment's deletion is notified: the invoice is found through the payment's mirrored version
    notify(
        company, change(company.qbo.realm_id, "Payment", payment["Id"], "Delete", MOMENT + timedelta(hours=1))
    )
    result = drain(company, client_for, "run-delete")
    assert result.pulls[0].deleted == {"Payment": 1} and result.done == 1
    assert mirrored(company, "Payment", payment["Id"])["deleted"] is True
    assert _payment_columns(company, invoice_id) == ("unpaid", Decimal("0.00"), Decimal("100.00"), None)


def test_voided_and_deleted_invoices_are_settled(company: Company, client_for: ClientFor) -> None:
    customer = company.qbo.customer("Payer")
    item = company.qbo.item("Service", "100.00")
    voided, deleted = (company.qbo.invoice(customer, item, "100.00") for _ in range(2))
    company.pull()
    link_invoices_as_pushed(company.engine, company.org, [voided, deleted])
    company.act("void_invoice", invoice_id=voided["Id"])
    company.act("delete_invoice", invoice_id=deleted["Id"])
    notify(
        company,
        change(company.qbo.realm_id, "Invoice", voided["Id"], "Void"),
        change(company.qbo.realm_id, "Invoice", deleted["Id"], "Delete"),
    )
    result = drain(company, client_for)
    assert result.pulls[0].deleted == {"Invoice": 1} and result.pulls[0].changed == {"Invoice": 1}
    for invoice in (voided, deleted):
        row = company.row(s.invoices, qbo_id=invoice["Id"])
        assert (row["payment_status"], row["amount_due"]) == ("voided", Decimal("0.00"))
    assert mirrored(company, "Invoice", deleted["Id"])["deleted"] is True


def test_deactivated_and_merged_away_customers_are_deactivated(
    company: Company, client_for: ClientFor
) -> None:
    kept, inactive, merged = (company.qbo.customer(name) for name in ("Kept", "Inactive", "Merged"))
    company.pull()
    company.act("deactivate", entity="Customer", id=inactive["Id"])
    notify(
        company,
        change(company.qbo.realm_id, "Customer", inactive["Id"], "Update"),
        change(company.qbo.realm_id, "Customer", merged["Id"], "Merge"),
        change(
            company.qbo.realm_id, "Customer", kept["Id"], "Merge"
        ),  # the customer merged into: still there
    )
    # QuickBooks no longer returns a customer merged away; the sandbox cannot merge, so the read leaves it out
    still_there = company.client.read_many("Customer", [kept["Id"], inactive["Id"]])
    result = drain(company, lambda org, realm: ReadsServedFrom(company, {"Customer": still_there}))
    assert result.pulls[0].deleted == {"Customer": 1}
    active = {c["qbo_id"]: c["is_active"] for c in company.rows(s.customers)}
    assert active == {kept["Id"]: True, inactive["Id"]: False, merged["Id"]: False}
    assert queue(company.engine) == []


def test_a_failed_pull_leaves_its_events_pending_for_the_next_run(
    company: Company, client_for: ClientFor
) -> None:
    customer = company.qbo.customer("Ada")
    notify(company, changed(company, "Customer", customer, "Create"))
    with pytest.raises(ServerError):
        drain(company, lambda org, realm: ReadsServedFrom(company, {}, fail=True), "run-failed")
    [row] = inbox(company.engine)
    assert (row["status"], row["run_id"]) == ("pending", "run-failed")
    assert company.rows(s.customers) == []
    result = drain(company, client_for, "run-next")
    assert result.done == 1
    [row] = inbox(company.engine)
    assert (row["status"], row["run_id"]) == ("done", "run-next")


def test_an_event_arriving_during_a_run_waits_for_the_next_one(company: Company) -> None:
    first, second = company.qbo.customer("First"), company.qbo.customer("Second")
    notify(company, changed(company, "Customer", first, "Create"))

    class ArrivesWhileReading(ReadsServedFrom):
        def read_many(self, entity: str, ids: Iterable[str]) -> list[dict]:
            notify(company, changed(company, "Customer", second, "Create"))
            return super().read_many(entity, ids)

    result = drain(company, lambda org, realm: ArrivesWhileReading(company, {}))
    assert (result.events, result.done) == (1, 1)
    done, waiting = inbox(company.engine)
    assert (done["entity_id"], done["status"]) == (first["Id"], "done")
    assert (waiting["entity_id"], waiting["status"], waiting["run_id"]) == (second["Id"], "pending", None)


def test_events_wait_while_the_connection_needs_reauthorisation(
    company: Company, client_for: ClientFor, secret_key: str
) -> None:
    customer = company.qbo.customer("Ada")
    notify(company, changed(company, "Customer", customer, "Create"))
    with ConnectionStore(company.engine, secret_key).locked(company.org, company.qbo.realm_id) as row:
        row.set_status("needs_reauth", "refresh token refused")
    with pytest.raises(RealmNotConnected):
        drain(company, client_for)
    assert statuses(inbox(company.engine)) == ["pending"]


def test_events_of_a_realm_no_longer_connected_are_ignored(company: Company, client_for: ClientFor) -> None:
    customer = company.qbo.customer("Ada")
    notify(company, changed(company, "Customer", customer, "Create"))
    unlink_organization(company.engine, company.org)
    result = drain(company, client_for)
    assert (result.events, result.ignored, result.pulls) == (1, 1, [])
    [row] = inbox(company.engine)
    assert (row["status"], row["note"]) == ("ignored", UNKNOWN_REALM)


def test_an_organisation_switched_to_another_company_during_a_drain_gets_none_of_the_old_ones_events(
    company: Company, secret_key: str
) -> None:
    """The switch commits between the claim and the reads: the client asked for the old realm does not exist any
    more, so nothing of R is read into (or tombstoned in) the mirror now holding company S's objects."""
    engine, base = company.engine, company.sandbox.base_url
    merged = company.qbo.customer("Merged away in R")
    company.pull()
    notify(company, changed(company, "Customer", merged, "Merge"))
    other = Qbo(company.sandbox)
    asked: list[tuple[int, str]] = []

    def client_for(organization_id: int, realm_id: str) -> QuickBooksClient:
        if not asked:  # `batchly-sync ... switch` commits while the drain runs
            unlink_organization(engine, organization_id)
            connect(engine, organization_id, other.realm_id, base, secret_key)
        asked.append((organization_id, realm_id))
        record = ConnectionStore(engine, secret_key).load(organization_id, realm_id)  # as production does
        return QuickBooksClient(record.realm_id, base, SandboxTokens(base, record.realm_id))

    result = drain(company, client_for)
    assert asked == [(company.org, company.qbo.realm_id)]
    assert (result.events, result.done, result.ignored, result.pulls) == (1, 0, 1, [])
    with engine.connect() as conn:
        assert (
            conn.execute(sa.select(s.qbo_mirror).where(s.qbo_mirror.c.organization_id == company.org)).all()
            == []
        )
    new = other.customer("New in S")
    assert new["Id"] == merged["Id"]  # ids are per company
    record_delivery(
        engine, parse_delivery(legacy(change(other.realm_id, "Customer", new["Id"], "Create", MOMENT)))
    )
    tokens = SandboxTokens(base, other.realm_id)
    drain_realm(engine, other.realm_id, "run-2", lambda org, realm: QuickBooksClient(realm, base, tokens))
    with engine.connect() as conn:
        names = conn.execute(
            sa.select(s.customers.c.display_name).where(s.customers.c.organization_id == company.org)
        ).scalars()
        assert "New in S" in list(names)


def test_a_client_of_another_company_reads_nothing(company: Company) -> None:
    customer = company.qbo.customer("Ada")
    notify(company, changed(company, "Customer", customer, "Create"))
    other = Qbo(company.sandbox)
    base = company.sandbox.base_url
    with pytest.raises(WrongCompany):
        drain(
            company,
            lambda org, realm: QuickBooksClient(other.realm_id, base, SandboxTokens(base, other.realm_id)),
        )
    assert statuses(inbox(company.engine)) == ["pending"]  # left for a run with the right client


@pytest.mark.parametrize("names", ["Invoice", "Payment"])
def test_a_refund_receipts_event_settles_the_invoice_it_refunds(
    company: Company, client_for: ClientFor, names: str
) -> None:
    """A refund changes no invoice's balance, so no Invoice event comes with it: its own event re-reads the invoices
    it names (directly or through the payment it refunds), as the pull does."""
    qbo_invoice, invoice_id = _pushed_invoice(company)
    payment = company.act("record_payment", invoice_id=qbo_invoice["Id"])["Payment"]
    company.pull()
    refund = _refund(company, qbo_invoice, names, qbo_invoice["Id"] if names == "Invoice" else payment["Id"])
    intake = notify(company, changed(company, "RefundReceipt", refund, "Create"))
    assert intake.ignored == 0
    drain(company, client_for)
    row = company.row(s.invoices, id=invoice_id)
    assert (row["payment_status"], row["amount_refunded"]) == ("refunded", Decimal("100.00"))
