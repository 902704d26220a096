"""The CDC repair: changes no event brought (dropped, held back, sent while the receiver was down) reach Batchly through
one CDC read per realm; when events brought everything a sweep costs that one read; the health of each realm."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from batchly_pipelines.quickbooks.client import CdcResult, QuickBooksClient
from batchly_pipelines.services.webhooks.drain import drain_realm
from batchly_pipelines.services.webhooks.events import parse_delivery
from batchly_pipelines.services.webhooks.intake import record_delivery
from batchly_pipelines.services.webhooks.repair import (
    CDC_HORIZON,
    HORIZON_WARNING,
    sweep_realm,
    sweep_realms,
    sweeps_due,
    webhook_health,
)
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.connections import ConnectionStore
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines.store.webhook_repair import realm_repairs, record_receiver_start, save_sweep
from batchly_pipelines_tests.pull.test_completeness import _pushed_invoice, _refund
from batchly_pipelines_tests.support import factories
from batchly_pipelines_tests.support.pull import Company, link_invoices_as_pushed, queue
from batchly_pipelines_tests.support.quickbooks import SandboxTokens
from batchly_pipelines_tests.support.webhooks import change, connect, legacy

ClientFor = Callable[[int, str], QuickBooksClient]


def _repair_of(company: Company) -> sa.Row | None:
    with company.engine.connect() as conn:
        return realm_repairs(conn, [company.qbo.realm_id]).get(company.qbo.realm_id)  # type: ignore[return-value]


def test_a_sweep_pulls_what_no_event_brought_and_the_next_one_costs_one_read(
    company: Company, client_for: ClientFor
) -> None:
    customer = company.qbo.customer("Ada")
    item = company.qbo.item("Hours", "50.00")
    invoice = company.qbo.invoice(customer, item, "100.00", DueDate="2099-01-01")
    paid = company.qbo.invoice(customer, item, "100.00", DueDate="2099-01-01")
    payment = company.act("record_payment", invoice_id=paid["Id"])["Payment"]
    company.pull()
    link_invoices_as_pushed(company.engine, company.org, [invoice, paid])
    company.pull()
    realm = company.qbo.realm_id
    assert sweep_realm(company.engine, realm, client_for).gaps == {}  # the pulls left nothing to repair

    # the accountant's changes; every webhook of them was lost
    company.act("update_customer", customer_id=customer["Id"], fields={"Notes": "no event came"})
    company.act("set_item_price", item_id=item["Id"], unit_price="65.00")
    company.act("record_payment", invoice_id=invoice["Id"], amount="40.00")
    company.act("delete_payment", payment_id=payment["Id"])

    sweep = sweep_realm(company.engine, realm, client_for, run_id="sweep-1")
    # the new payment and the deleted one; both invoices they moved
    assert sweep.gaps == {"Customer": 1, "Item": 1, "Payment": 2, "Invoice": 2}
    assert company.row(s.customers, qbo_id=customer["Id"])["notes"] == "no event came"
    assert company.row(s.items, qbo_id=item["Id"])["unit_price"] == Decimal("65.00")
    partial = company.row(s.invoices, qbo_id=invoice["Id"])
    assert (partial["payment_status"], partial["amount_paid"]) == ("partial", Decimal("40.00"))
    reverted = company.row(s.invoices, qbo_id=paid["Id"])
    assert (reverted["payment_status"], reverted["amount_due"]) == ("unpaid", Decimal("100.00"))
    assert queue(company.engine) == []  # nothing the repair wrote echoes back as a push
    repair = _repair_of(company)
    assert repair is not None and repair.gaps == 6 and repair.repaired_until == sweep.repaired_until

    again = sweep_realm(company.engine, realm, client_for)
    assert (again.gaps, again.api_calls, again.since) == ({}, 1, sweep.repaired_until)


def test_changes_webhooks_brought_cost_the_sweep_nothing_more(
    company: Company, client_for: ClientFor
) -> None:
    customer = company.qbo.customer("Bob")
    company.pull()
    realm = company.qbo.realm_id
    sweep_realm(company.engine, realm, client_for)
    updated = company.act("update_customer", customer_id=customer["Id"], fields={"Notes": "via webhook"})
    record_delivery(company.engine, parse_delivery(legacy(change(realm, "Customer", customer["Id"]))))
    drain_realm(company.engine, realm, "drain-1", client_for)
    sweep = sweep_realm(company.engine, realm, client_for)
    assert sweep.changes == 1 and sweep.gaps == {} and sweep.api_calls == 1
    assert updated["Customer"]["SyncToken"] == "1"


def test_a_sweep_is_due_when_never_made_after_the_interval_and_at_once_after_a_receiver_restart(
    company: Company, client_for: ClientFor
) -> None:
    realm = company.qbo.realm_id
    assert sweeps_due(company.engine) == {realm: "never swept"}
    sweep_realm(company.engine, realm, client_for)
    assert sweeps_due(company.engine) == {}
    later = utcnow() + timedelta(minutes=16)
    assert sweeps_due(company.engine, now=later) == {realm: "last swept 16 min ago"}
    record_receiver_start(company.engine, "http://127.0.0.1:8767/webhooks/quickbooks")
    assert "receiver started" in sweeps_due(company.engine)[realm]
    sweep_realm(company.engine, realm, client_for)
    assert sweeps_due(company.engine) == {}


def test_health_names_a_silent_realm_and_a_gap_near_cdcs_horizon(
    company: Company, client_for: ClientFor
) -> None:
    realm = company.qbo.realm_id
    [fresh] = webhook_health(company.engine, silence_limit=timedelta(hours=1))
    assert fresh.realm_id == realm and fresh.problems == ()
    [silent] = webhook_health(
        company.engine, silence_limit=timedelta(hours=1), now=utcnow() + timedelta(hours=2)
    )
    assert len(silent.problems) == 1 and "sent no webhook event for 2.0 h" in silent.problems[0]
    record_delivery(company.engine, parse_delivery(legacy(change(realm, "Customer", "1"))))
    sweep_realm(company.engine, realm, client_for)
    near = utcnow() + CDC_HORIZON - HORIZON_WARNING + timedelta(hours=1)
    [old] = webhook_health(company.engine, silence_limit=timedelta(days=365), now=near)
    assert len(old.problems) == 1 and "no CDC sweep has covered the last 25.0 days" in old.problems[0]


def test_a_receiver_start_during_a_sweep_leaves_the_next_one_due(company: Company) -> None:
    """The receiver came back while the CDC was being read: what failed to arrive after that read is not covered."""
    realm, base = company.qbo.realm_id, company.sandbox.base_url

    class RestartDuringCdc(QuickBooksClient):
        def cdc(self, entities: Sequence[str], changed_since: datetime) -> CdcResult:
            answer = super().cdc(entities, changed_since)
            record_receiver_start(company.engine, "http://127.0.0.1:8767/webhooks/quickbooks")
            return answer

    sweep_realm(
        company.engine, realm, lambda org, realm: RestartDuringCdc(realm, base, SandboxTokens(base, realm))
    )
    assert "receiver started" in sweeps_due(company.engine)[realm]


def test_a_sweep_brings_a_refund_receipt_no_event_brought(company: Company, client_for: ClientFor) -> None:
    qbo_invoice, invoice_id = _pushed_invoice(company)
    company.act("record_payment", invoice_id=qbo_invoice["Id"])
    company.pull()
    realm = company.qbo.realm_id
    sweep_realm(company.engine, realm, client_for)
    _refund(company, qbo_invoice, "Invoice", qbo_invoice["Id"])
    sweep = sweep_realm(company.engine, realm, client_for)
    assert sweep.gaps.get("RefundReceipt") == 1
    row = company.row(s.invoices, id=invoice_id)
    assert (row["payment_status"], row["amount_refunded"]) == ("refunded", Decimal("100.00"))


def test_a_sweep_settles_a_pushed_invoice_deleted_before_any_pull_mirrored_it(
    company: Company, client_for: ClientFor
) -> None:
    """The push does not write the mirror: the deletion of an invoice it never held is a gap, as the pull's CDC
    has it."""
    customer = company.qbo.customer("Payer")
    item = company.qbo.item("Service", "100.00")
    company.pull()
    realm = company.qbo.realm_id
    sweep_realm(company.engine, realm, client_for)
    invoice = company.qbo.invoice(customer, item, "100.00")  # as the push creates it
    link_invoices_as_pushed(company.engine, company.org, [invoice])
    company.act("delete_invoice", invoice_id=invoice["Id"])  # every webhook of it lost
    sweep = sweep_realm(company.engine, realm, client_for, run_id="sweep-2")
    assert sweep.gaps == {"Invoice": 1}
    row = company.row(s.invoices, qbo_id=invoice["Id"])
    assert (row["payment_status"], row["amount_due"]) == ("voided", Decimal("0.00"))


@pytest.mark.parametrize("reauthorised_by", ["set_status", "connect again"])
def test_an_organisation_re_authorised_gets_what_changed_while_it_waited(
    company: Company, secret_key: str, reauthorised_by: str
) -> None:
    """Two organisations on one realm; B waits for re-authorisation while an event is drained (settled once A was
    pulled) and sweeps move the realm's repaired_until past the change. Re-authorised, B's next sweep starts from
    before it lost access and brings it the change."""
    engine, realm, base = company.engine, company.qbo.realm_id, company.sandbox.base_url
    with engine.begin() as conn:
        org_b = factories.organization(conn, timezone="America/New_York")
    connect(engine, org_b, realm, base, secret_key)
    tokens = SandboxTokens(base, realm)

    def client_for(organization_id: int, realm_id: str) -> QuickBooksClient:
        return QuickBooksClient(realm_id, base, tokens)

    b = Company(engine, company.sandbox, org_b, company.qbo, client_for(org_b, realm))
    customer = company.qbo.customer("Ada")
    company.pull()
    b.pull()
    sweep_realm(engine, realm, client_for)
    with ConnectionStore(engine, secret_key).locked(org_b, realm) as row:
        row.set_status("needs_reauth", "refresh token refused")
    company.act("update_customer", customer_id=customer["Id"], fields={"Notes": "edited in QBO"})
    record_delivery(engine, parse_delivery(legacy(change(realm, "Customer", customer["Id"]))))
    assert drain_realm(engine, realm, "run-1", client_for).done == 1  # A was pulled
    with engine.begin() as conn:  # the sweeps made while B waited moved past the change
        save_sweep(conn, realm, utcnow() + timedelta(seconds=30), utcnow(), 0)
    if reauthorised_by == "set_status":
        with ConnectionStore(engine, secret_key).locked(org_b, realm) as row:
            row.set_status("connected", "re-authorised")
    else:
        connect(engine, org_b, realm, base, secret_key)
    assert realm in sweeps_due(engine)  # due at once
    sweep = sweep_realm(engine, realm, client_for)
    assert sweep.gaps == {"Customer": 1}  # B's; A had it
    assert (
        company.row(s.customers, organization_id=company.org, qbo_id=customer["Id"])["notes"]
        == "edited in QBO"
    )
    assert b.row(s.customers, organization_id=org_b, qbo_id=customer["Id"])["notes"] == "edited in QBO"


def test_sweeping_many_realms_retries_a_failing_one_and_reports_it_while_the_others_are_repaired(
    company: Company, another_company: Callable[[], Company]
) -> None:
    """One run sweeps three realms; the second realm's QuickBooks fails every time: it is tried three times and
    reported in its own outcome, its repaired_until stays (it is due again); the other two get what no event
    brought and their repaired_until."""
    companies = [company, another_company(), another_company()]
    customers = {}
    for each in companies:
        customers[each.qbo.realm_id] = each.qbo.customer("Ada")
        each.pull()
        each.act(
            "update_customer", customer_id=customers[each.qbo.realm_id]["Id"], fields={"Notes": "no event"}
        )
    failing = companies[1].qbo.realm_id
    base = company.sandbox.base_url
    tries: list[str] = []

    class Down(QuickBooksClient):
        def cdc(self, entities: Sequence[str], changed_since: datetime) -> CdcResult:
            tries.append(self.realm_id)
            raise ConnectionError(f"QuickBooks company {self.realm_id} did not answer")

    def client_for(organization_id: int, realm_id: str) -> QuickBooksClient:
        kind = Down if realm_id == failing else QuickBooksClient
        return kind(realm_id, base, SandboxTokens(base, realm_id))

    reported: list[str] = []
    realms = [each.qbo.realm_id for each in companies]
    outcomes = sweep_realms(
        company.engine,
        realms,
        client_for,
        run_id="sweeps-1",
        workers=2,
        attempts=3,
        retry_delay_s=0.0,
        on_outcome=lambda outcome: reported.append(outcome.key),
    )
    assert [outcome.key for outcome in outcomes] == realms and sorted(reported) == sorted(realms)
    by_realm = {outcome.key: outcome for outcome in outcomes}
    down = by_realm[failing]
    assert (down.failed, down.attempts, down.result, tries) == (True, 3, None, [failing] * 3)
    assert down.error is not None and f"QuickBooks company {failing} did not answer" in down.error
    with company.engine.connect() as conn:
        repairs = realm_repairs(conn, realms)
    assert failing not in repairs
    assert set(sweeps_due(company.engine)) == {failing}  # swept again next time; the others are not due
    for each in (companies[0], companies[2]):
        realm = each.qbo.realm_id
        swept = by_realm[realm]
        assert not swept.failed and swept.attempts == 1 and swept.result is not None
        assert swept.result.gaps == {"Customer": 1}
        assert repairs[realm].repaired_until == swept.result.repaired_until is not None
        row = each.row(s.customers, organization_id=each.org, qbo_id=customers[realm]["Id"])
        assert row["notes"] == "no event"
    failed_row = companies[1].row(
        s.customers, organization_id=companies[1].org, qbo_id=customers[failing]["Id"]
    )
    assert failed_row["notes"] != "no event"
