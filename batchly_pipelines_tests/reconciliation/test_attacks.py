"""The full reconciliation under attack: what an adversary does through both systems' own interfaces (the sandbox's
HTTP API and accountant actions; Batchly's tables as the app writes them), and what the safety net must still do —
list every difference, repair only what the rules allow, never write from the wrong books, never crash on a record
Batchly cannot store."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from batchly_pipelines.cli.main import main
from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.services.reconciliation.company import CompanyReconciliation, reconcile_company
from batchly_pipelines.services.reconciliation.compare import RECORD
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.connections import CompanyMismatch
from batchly_pipelines.store.db import sync_transaction
from batchly_pipelines.store.invoice_sends import InvoiceSend, record_sends
from batchly_pipelines_tests.reconciliation.switch import switch_after_the_read
from batchly_pipelines_tests.support import factories
from batchly_pipelines_tests.support.pull import Company, link_invoices_as_pushed
from batchly_pipelines_tests.support.quickbooks import SandboxTokens
from batchly_pipelines_tests.support.sandbox_client import Qbo

pytestmark = pytest.mark.usefixtures(
    "connected"
)  # reconcile runs only for the company the organisation holds

SYNCED_TABLES = (
    s.customers,
    s.items,
    s.invoices,
    s.invoice_lines,
    s.qbo_sync_state,
    s.qbo_mirror,
    s.sync_queue,
    s.sync_conflicts,
    s.pull_errors,
    s.sync_log,
)


def _reconcile(company: Company, *, repair: bool = True) -> CompanyReconciliation:
    return reconcile_company(company.engine, company.client, company.org, repair=repair)


def _open(result: CompanyReconciliation) -> set[tuple[str, str | None, str]]:
    return {(d.entity, d.qbo_id, d.field) for d in result.differences if result.status(d) == "open"}


def _snapshot(company: Company) -> dict[str, list[dict[str, Any]]]:
    return {table.name: company.rows(table) for table in SYNCED_TABLES}


def _app_update(company: Company, table: sa.Table, row_id: int, **values: object) -> None:
    with company.engine.begin() as conn:
        conn.execute(sa.update(table).where(table.c.id == row_id).values(**values))


def _other_company_client(company: Company) -> tuple[Qbo, QuickBooksClient]:
    other = Qbo(company.sandbox)
    client = QuickBooksClient(
        other.realm_id, company.sandbox.base_url, SandboxTokens(company.sandbox.base_url, other.realm_id)
    )
    return other, client


def test_a_customer_made_inactive_in_quickbooks_is_deactivated_in_batchly(company: Company) -> None:
    ada = company.qbo.customer("Ada")
    company.pull()
    company.act("deactivate", entity="Customer", id=ada["Id"])

    assert _open(_reconcile(company, repair=False)) == {("customer", ada["Id"], "is_active")}
    assert _reconcile(company).differences == []
    assert company.row(s.customers, qbo_id=ada["Id"])["is_active"] is False


def test_names_with_quotes_backslashes_percent_unicode_and_500_characters_round_trip(
    company: Company,
) -> None:
    names = ["O'Brien \\ 100% Zoë 東京", ("Ω'\\%" * 125)[:500]]
    made = [company.qbo.customer(name) for name in names]

    assert _open(_reconcile(company, repair=False)) == {("customer", c["Id"], RECORD) for c in made}
    assert _reconcile(company).differences == []
    assert [company.row(s.customers, qbo_id=c["Id"])["display_name"] for c in made] == names
    assert _reconcile(company, repair=False).differences == []


def test_the_thousand_and_first_item_is_read(company: Company) -> None:
    company.qbo.admin.seed(
        company.qbo.realm_id, customers=0, items=1001, invoices=0, payments=0, days=30, seed=4
    )
    looked = _reconcile(company, repair=False)
    assert looked.counts["Item"] >= 1001
    assert (
        len([d for d in looked.differences if d.entity == "item" and d.field == RECORD])
        == looked.counts["Item"]
    )
    assert _reconcile(company).differences == []
    assert len(company.rows(s.items)) == looked.counts["Item"]


def test_compare_only_writes_nothing_whatever_differs(company: Company) -> None:
    ada = company.qbo.customer("Ada", Notes="first")
    item = company.qbo.item("Service", "100.00")
    company.pull()
    invoice = company.qbo.invoice(ada, item, "100.00", DocNumber="2001")
    link_invoices_as_pushed(company.engine, company.org, [invoice])
    company.pull()
    company.qbo.payment(invoice, "40.00")
    company.act("update_customer", customer_id=ada["Id"], fields={"Notes": "second"})
    company.act("set_item_price", item_id=item["Id"], unit_price="120.00")
    company.qbo.customer("Grace")
    before = _snapshot(company)

    result = _reconcile(company, repair=False)
    assert _open(result) >= {("customer", ada["Id"], "notes"), ("item", item["Id"], "unit_price")}
    assert main(["reconcile", "--org", str(company.org), "--no-repair"]) == 1
    assert _snapshot(company) == before


def test_a_batchly_invoice_linked_to_a_quickbooks_id_that_does_not_exist_is_listed_then_shown_deleted(
    company: Company,
) -> None:
    ada = company.qbo.customer("Ada")
    item = company.qbo.item("Service", "100.00")
    company.pull()
    customer = company.row(s.customers, qbo_id=ada["Id"])["id"]
    product = company.row(s.items, qbo_id=item["Id"])["id"]
    with sync_transaction(
        company.engine
    ) as conn:  # linked to an invoice QuickBooks has no trace of (as if pushed)
        invoice_id = factories.invoice(conn, company.org, customer, product)
        conn.execute(
            sa.update(s.invoices)
            .where(s.invoices.c.id == invoice_id)
            .values(qbo_id="999999", sync_status="synced", payment_status="unpaid")
        )

    looked = _reconcile(company, repair=False)
    assert _open(looked) == {("invoice", "999999", "amount_due"), ("invoice", "999999", "payment_status")}
    assert {d.why for d in looked.differences} == {"deleted in QuickBooks"}

    result = _reconcile(company)
    row = company.row(s.invoices, id=invoice_id)
    # nothing is owed on an invoice QuickBooks does not have (read by Id IN too): shown as the pull shows a deletion
    assert (row["amount_due"], row["payment_status"]) == (Decimal("0.00"), "voided")
    assert {d.field for d in result.repaired} == {"amount_due", "payment_status"}
    assert result.differences == []


def test_an_organisation_connected_to_another_company_is_refused_before_anything_is_read(
    company: Company,
) -> None:
    ada = company.qbo.customer("Ada")
    company.pull()
    other, client = _other_company_client(company)
    other.customer("Somebody else's customer")
    before = _snapshot(company)
    with client, pytest.raises(CompanyMismatch, match=f"organisation {company.org}.*{other.realm_id}"):
        reconcile_company(company.engine, client, company.org)
    assert client.stats.calls == {} or sum(client.stats.calls.values()) == 0
    assert _snapshot(company) == before
    assert company.row(s.customers, qbo_id=ada["Id"])["is_active"] is True


def test_a_switch_to_another_company_while_the_books_are_read_writes_nothing_from_the_old_ones(
    company: Company, monkeypatch: pytest.MonkeyPatch
) -> None:
    company.qbo.customer("Ada")
    company.pull()
    company.qbo.customer("Grace")  # not pulled: a repair would create it
    switch_after_the_read(company, monkeypatch)
    before_customers = len(company.rows(s.customers))
    with pytest.raises(CompanyMismatch):
        _reconcile(company)
    assert len(company.rows(s.customers)) == before_customers
    assert company.rows(s.qbo_mirror) == []
    assert company.rows(s.qbo_sync_state) == []


def test_a_quickbooks_customer_name_batchly_cannot_store_is_listed_not_crashing(company: Company) -> None:
    ada = company.qbo.customer("Ada")
    company.pull()
    company.act("update_customer", customer_id=ada["Id"], fields={"DisplayName": "Ada\x00Lovelace"})
    nul = company.qbo.customer("Bad\x00Name")
    item = company.qbo.item("Pricey", "100.00")
    company.pull()
    company.act("set_item_price", item_id=item["Id"], unit_price="12345678901.25")

    looked = _reconcile(company, repair=False)
    assert {(d.qbo_id, d.field) for d in looked.differences} >= {
        (ada["Id"], "display_name"),
        (item["Id"], "unit_price"),
    }
    result = _reconcile(company)
    assert _open(result) == set(), [d.as_row() for d in result.differences]
    assert {d.qbo_id for d in result.differences} >= {ada["Id"], nul["Id"], item["Id"]}
    assert company.row(s.customers, qbo_id=ada["Id"])["display_name"] == "Ada"
    assert company.row(s.items, qbo_id=item["Id"])["unit_price"] == Decimal("100.00")


def test_an_invoice_batchlys_push_created_that_no_batchly_invoice_links_to_is_an_open_orphan(
    company: Company,
) -> None:
    ada = company.qbo.customer("Ada")
    item = company.qbo.item("Service", "100.00")
    company.pull()
    customer = company.row(s.customers, qbo_id=ada["Id"])["id"]
    product = company.row(s.items, qbo_id=item["Id"])["id"]
    with company.engine.begin() as conn:
        invoice_id = factories.invoice(conn, company.org, customer, product, doc_number="4001")
    # the push records the send, its create lands in QuickBooks, the answer is lost ...
    record_sends(
        company.engine, company.qbo.realm_id, company.org, [InvoiceSend(invoice_id, "4001", ada["Id"])]
    )
    orphan = company.qbo.invoice(ada, item, "20.20", "20.20", DocNumber="4001")
    with company.engine.begin() as conn:  # ... and the app discards the draft before the next push
        conn.execute(sa.delete(s.invoice_lines).where(s.invoice_lines.c.invoice_id == invoice_id))
        conn.execute(sa.delete(s.invoices).where(s.invoices.c.id == invoice_id))
    accountants = company.qbo.invoice(ada, item, "75.00", DocNumber="QB-77")  # QuickBooks' own: not synced

    result = _reconcile(company)

    assert _open(result) == {("invoice", orphan["Id"], RECORD)}
    [found] = result.of("invoice", "open")
    assert "4001" in found.why and f"invoice {invoice_id}" in found.why and found.repair is None
    assert result.quickbooks_only_invoices == 1 and accountants["Id"] != orphan["Id"]


def test_a_value_batchly_cannot_store_blocks_only_its_own_field(company: Company) -> None:
    ada = company.qbo.customer("Ada", PrimaryEmailAddr={"Address": "ada@example.com"})
    company.pull()
    company.act(
        "update_customer",
        customer_id=ada["Id"],
        fields={"Notes": "call\x00me", "PrimaryEmailAddr": {"Address": "ada@new.example"}},
    )
    company.pull()  # the pull lists the notes and leaves the whole record out

    looked = _reconcile(company, repair=False)
    [email] = [d for d in looked.differences if d.field == "email"]
    assert (
        looked.status(email) == "open" and email.explained_by is None
    )  # the error names the notes, not this

    result = _reconcile(company)
    assert company.row(s.customers, qbo_id=ada["Id"])["email"] == "ada@new.example"
    [notes] = result.differences
    assert notes.field == "notes" and result.status(notes) == "explained"
    assert notes.explained_by is not None and "NUL" in notes.explained_by
