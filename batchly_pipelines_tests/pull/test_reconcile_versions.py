"""Customer and item reconciliation picks mirror rows by version (``qbo_reconciled``), never by clock stamps."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from batchly_pipelines.services.pull.checks import payment_status
from batchly_pipelines.services.pull.mirror import store_objects
from batchly_pipelines.services.pull.organization import (
    reconcile_customers,
    reconcile_invoice_payments,
    reconcile_items,
)
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.pull.test_scenarios import _linked_invoice
from batchly_pipelines_tests.support import factories
from batchly_pipelines_tests.support.pull import Company, open_conflicts


def _reconciled(company: Company, entity: str) -> dict[str, str]:
    """qbo_id → the mirror version it was reconciled at."""
    with company.engine.connect() as conn:
        query = sa.select(s.qbo_reconciled.c.qbo_id, s.qbo_reconciled.c.mirror_version).where(
            s.qbo_reconciled.c.organization_id == company.org, s.qbo_reconciled.c.entity_type == entity
        )
        return {qbo_id: version for qbo_id, version in conn.execute(query).all()}


def _mirror_versions(company: Company, entity: str) -> dict[str, str]:
    with company.engine.connect() as conn:
        query = sa.select(s.qbo_mirror.c.qbo_id, s.qbo_mirror.c.version).where(
            s.qbo_mirror.c.organization_id == company.org, s.qbo_mirror.c.entity_type == entity
        )
        return {qbo_id: version for qbo_id, version in conn.execute(query).all()}


@pytest.mark.postgres
@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_a_customer_mirrored_after_a_concurrent_reconciliation_began_is_reconciled_next_time(
    company: Company,
) -> None:
    ada = company.qbo.customer("Ada", Notes="base")
    company.pull()
    customer_id = company.row(s.customers, qbo_id=ada["Id"])["id"]
    company.act("update_customer", customer_id=ada["Id"], fields={"Notes": "from QuickBooks"})
    updated = company.client.read("Customer", ada["Id"])
    with company.engine.connect() as conn, conn.begin():  # a long pull mirrors it, committing late
        store_objects(conn, company.org, "Customer", [updated])
        # its client-clock stamp was taken well before it commits (a slow pull: more pages, more companies)
        conn.execute(
            sa.update(s.qbo_mirror)
            .where(s.qbo_mirror.c.organization_id == company.org, s.qbo_mirror.c.qbo_id == ada["Id"])
            .values(pulled_at=utcnow() - timedelta(minutes=30))
        )
        # meanwhile a reconciliation reads the committed (older) mirror row and records having seen it
        reconcile_customers(company.engine, company.org)
        assert company.row(s.customers, id=customer_id)["notes"] == "base"
    reconcile_customers(company.engine, company.org)
    assert company.row(s.customers, id=customer_id)["notes"] == "from QuickBooks"
    again = reconcile_customers(company.engine, company.org)
    assert (again.examined, again.changed, again.conflicts) == (0, 0, 0)


def test_every_mirror_row_records_its_version_and_a_second_reconciliation_reads_nothing(
    company: Company,
) -> None:
    with company.engine.begin() as conn:
        factories.customer(conn, company.org, "Joe's Garage", email="joe@garage.example")
    ada = company.qbo.customer("Ada")
    joe = company.qbo.customer("Joe's Garage", PrimaryEmailAddr={"Address": "owner@elsewhere.example"})
    widget = company.qbo.item("Widget", "10.00")
    company.pull()
    [review] = open_conflicts(company.engine)
    assert (review["field"], review["qbo_id"]) == ("link", joe["Id"])
    # created, linked and sent-to-review rows alike record the version they were reconciled at
    assert _reconciled(company, "Customer") == _mirror_versions(company, "Customer")
    assert {ada["Id"], joe["Id"]} <= set(_reconciled(company, "Customer"))
    assert _reconciled(company, "Item") == _mirror_versions(company, "Item")
    assert widget["Id"] in _reconciled(company, "Item")
    before = company.rows(s.customers), company.rows(s.items), company.rows(s.sync_conflicts)
    for stats in (
        reconcile_customers(company.engine, company.org),
        reconcile_items(company.engine, company.org),
    ):
        assert (stats.examined, stats.changed, stats.conflicts, stats.review) == (0, 0, 0, 0)
    assert (company.rows(s.customers), company.rows(s.items), company.rows(s.sync_conflicts)) == before


def test_rows_without_a_recorded_version_are_reconciled_once_more(company: Company) -> None:
    """As after the upgrade to 0005: nothing recorded yet, so every mirror row is read again, however old its
    ``pulled_at`` — and a second run reads nothing."""
    ada = company.qbo.customer("Ada", Notes="base")
    company.pull()
    company.act("update_customer", customer_id=ada["Id"], fields={"Notes": "from QuickBooks"})
    with company.engine.begin() as conn:
        store_objects(conn, company.org, "Customer", [company.client.read("Customer", ada["Id"])])
        conn.execute(sa.update(s.qbo_mirror).values(pulled_at=utcnow() - timedelta(days=30)))
        conn.execute(sa.delete(s.qbo_reconciled))
    first = reconcile_customers(company.engine, company.org)
    assert (first.examined, first.updated) == (1, 1)
    assert company.row(s.customers, qbo_id=ada["Id"])["notes"] == "from QuickBooks"
    assert _reconciled(company, "Customer") == _mirror_versions(company, "Customer")
    assert reconcile_customers(company.engine, company.org).examined == 0


def test_the_payment_check_covers_invoices_reconciled_with_the_current_mirror_version_only(
    company: Company,
) -> None:
    qbo_invoice, _ = _linked_invoice(company, date.today() + timedelta(days=30))
    reconcile_invoice_payments(company.engine, company.org)
    assert payment_status(company.engine, company.org, date.today()).checked == 1
    with company.engine.begin() as conn:  # mirrored again, with a later pulled_at but not yet reconciled
        store_objects(
            conn, company.org, "Invoice", [company.client.read("Invoice", qbo_invoice["Id"])], force=True
        )
        conn.execute(
            sa.update(s.invoices).values(last_payment_sync_at=utcnow() + timedelta(days=1))
        )  # a clock ahead of the mirror's no longer counts
    assert payment_status(company.engine, company.org, date.today()).checked == 0
    reconcile_invoice_payments(company.engine, company.org)
    assert payment_status(company.engine, company.org, date.today()).passed
    assert payment_status(company.engine, company.org, date.today()).checked == 1
