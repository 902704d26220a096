"""A QuickBooks record Batchly cannot store (issue 10, failure 10) goes to the pull's error list, naming the record and
the field, and everything else is pulled — on SQLite as on PostgreSQL, where writing it used to fail every pull of
the organisation. The list shows where operators look: the materialisation's metadata and a failing check."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, instance_for_test

from batchly_pipelines.definitions import defs
from batchly_pipelines.defs.partitions import COMPANY, company_key, day_tags
from batchly_pipelines.defs.resources import BatchlyDatabase, QuickBooksResource
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.support.pull import Company, link_invoices_as_pushed, queue

NUL_NOTES = "gate code 12\x0034"
HUGE_PRICE = "100000000000.00"  # QuickBooks takes it (≤ 10¹²); NUMERIC(12,2) holds at most 9,999,999,999.99


def _errors(company: Company) -> set[tuple[str, str, str]]:
    with company.engine.connect() as conn:
        table = getattr(s, "pull_errors", None)
        if table is None:  # before the error list existed
            return set()
        rows = conn.execute(sa.select(table.c.entity_type, table.c.qbo_id, table.c.field)).all()
    return {tuple(row) for row in rows}


def _qbo_ids(company: Company, table: sa.Table) -> set[str]:
    return {row["qbo_id"] for row in company.rows(table)}


def test_a_record_batchly_cannot_store_is_listed_and_the_rest_is_pulled(company: Company) -> None:
    grace = company.qbo.customer("Grace Hopper", Notes="fine")
    nul = company.qbo.customer("Nul Notes", Notes=NUL_NOTES)
    cheap = company.qbo.item("Cheap", "5.00")
    costly = company.qbo.item("Costly", HUGE_PRICE)
    invoices = [company.qbo.invoice(grace, cheap, "10.00"), company.qbo.invoice(grace, cheap, "20.00")]

    company.pull()  # used to fail here on PostgreSQL, every time
    assert _qbo_ids(company, s.customers) == {grace["Id"]}
    assert _qbo_ids(company, s.items) == {cheap["Id"]}
    assert _errors(company) == {("Customer", nul["Id"], "notes"), ("Item", costly["Id"], "unit_price")}

    # a pushed invoice QuickBooks then takes beyond what Batchly's amounts hold; the other invoice is reconciled
    link_invoices_as_pushed(company.engine, company.org, invoices)
    line = dict(invoices[0]["Line"][0], Amount=Decimal("20000000000.00"))
    line["SalesItemLineDetail"] = {"ItemRef": line["SalesItemLineDetail"]["ItemRef"]}
    company.act("update", entity="Invoice", id=invoices[0]["Id"], fields={"Line": [line]})
    result = company.pull()
    assert (result.batchly_customers.errors, result.batchly_items.errors, result.batchly_invoices.errors) == (
        1,
        1,
        1,
    )
    assert ("Invoice", invoices[0]["Id"], "amount_due") in _errors(company)
    assert company.row(s.invoices, qbo_id=invoices[1]["Id"])["amount_due"] == Decimal("20.00")
    with company.engine.connect() as conn:
        messages = [row.message for row in conn.execute(sa.select(s.pull_errors.c.message))]
    assert any("NUL character" in m for m in messages) and any("NUMERIC(12,2)" in m for m in messages)

    again = company.pull()  # still listed, once per field, and tried again
    assert again.batchly_customers.errors == 1 and len(_errors(company)) == len(set(_errors(company)))

    company.act("update_customer", customer_id=nul["Id"], fields={"Notes": "gate code 1234"})
    company.act("set_item_price", item_id=costly["Id"], unit_price="99.00")
    company.pull()
    assert company.row(s.customers, qbo_id=nul["Id"])["notes"] == "gate code 1234"
    assert company.row(s.items, qbo_id=costly["Id"])["unit_price"] == Decimal("99.00")
    assert _errors(company) == {("Invoice", invoices[0]["Id"], "amount_due")}  # only the invoice is left
    assert queue(company.engine) == []


@pytest.fixture
def instance() -> Any:
    with instance_for_test() as dagster_instance:
        yield dagster_instance


def test_the_error_list_shows_in_the_materialisation_and_fails_a_check(
    connected: Company, instance: DagsterInstance
) -> None:
    nul = connected.qbo.customer("Nul Notes", Notes=NUL_NOTES)
    connected.qbo.customer("Grace Hopper")
    key = company_key(connected.org, "Acme Ltd")
    instance.add_dynamic_partitions(COMPANY, [key])
    url = connected.engine.url.render_as_string(hide_password=False)
    result = defs.resolve_job_def("pull_customers").execute_in_process(
        instance=instance,
        resources={
            "batchly_db": BatchlyDatabase(database_url=url),
            "quickbooks": QuickBooksResource(database_url=url),
        },
        partition_key=key,
        tags=day_tags(utcnow().astimezone(UTC).date()),
        raise_on_error=False,
    )
    assert result.success  # the pull went on with every other customer
    [materialization] = [
        m
        for m in result.asset_materializations_for_node("pull_customers_step")
        if m.asset_key.path == ["batchly_customers"]
    ]
    assert materialization.metadata["errors"].value == 1
    [unstored] = materialization.metadata["unstored"].value
    assert (unstored["qbo_id"], unstored["field"]) == (nul["Id"], "notes")
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    stored = checks["customers_stored"]
    assert not stored.passed and stored.metadata["failed"].value == 1
    [example] = stored.metadata["examples"].value
    assert (example["organization"], example["qbo_id"], example["field"]) == (
        connected.org,
        nul["Id"],
        "notes",
    )
