"""The cursor never moves past something unread, whatever window a pull was given, and whichever clock runs ahead.

Found by an attack on the pull: a day-range pull (a backfill's tags, ``--since``) that starts after the cursor moved it
to where the range was read to, so the changes between the old cursor and the range's start were never read by any
later incremental pull; and a QuickBooks clock more than ten minutes ahead of ours made every first or full pull fail,
as CDC's 30 days were counted on our clock."""

from __future__ import annotations

from datetime import datetime, timedelta

from batchly_pipelines.services.pull.mirror import Window
from batchly_pipelines.services.pull.organization import (
    PAYMENT_ENTITIES,
    cursor_name,
    pull_customers,
    pull_items,
    pull_organization,
    pull_payments,
    window_since_cursor,
)
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.cursors import get_cursor, set_cursor
from batchly_pipelines_tests.support.pull import Company

ENTITIES = ("Customer", "Item", *PAYMENT_ENTITIES)


def _cursors(company: Company) -> dict[str, str | None]:
    with company.engine.connect() as conn:
        return {entity: get_cursor(conn, company.org, cursor_name(entity)) for entity in ENTITIES}


def test_a_window_that_starts_after_the_cursor_leaves_the_cursor_where_it_was(company: Company) -> None:
    ada = company.qbo.customer("Ada")
    company.pull()
    stamped = datetime.fromisoformat(company.qbo.read("Customer", ada["Id"])["MetaData"]["LastUpdatedTime"])
    with company.engine.begin() as conn:  # as a nightly pull that ran an hour before the edit leaves them
        for entity in ENTITIES:
            set_cursor(conn, company.org, cursor_name(entity), (stamped - timedelta(hours=1)).isoformat())
    before = _cursors(company)
    company.act("update_customer", customer_id=ada["Id"], fields={"Notes": "edited in the gap"})
    edited = datetime.fromisoformat(company.qbo.read("Customer", ada["Id"])["MetaData"]["LastUpdatedTime"])
    with company.qbo.admin.clock_advanced(50 * 60):
        company.qbo.customer("Babbage")
        later = Window(edited + timedelta(minutes=20), edited + timedelta(days=1))  # e.g. today's day range
        for step in (pull_customers, pull_items, pull_payments):
            step(company.engine, company.client, company.org, later)
        assert _cursors(company) == before  # the gap before the range was not read
        pull_organization(
            company.engine, company.client, company.org, window_since_cursor(company.engine, company.org)
        )
    assert company.row(s.customers, qbo_id=ada["Id"])["notes"] == "edited in the gap"
    assert company.row(s.customers, display_name="Babbage")["qbo_id"]


def test_a_ranged_first_pull_sets_no_cursor(company: Company) -> None:
    ada = company.qbo.customer("Ada")
    with company.qbo.admin.clock_advanced(60):
        now = datetime.fromisoformat(company.qbo.read("Customer", ada["Id"])["MetaData"]["LastUpdatedTime"])
        pull_customers(
            company.engine,
            company.client,
            company.org,
            Window(now - timedelta(minutes=5), now + timedelta(hours=1)),
        )
    assert _cursors(company)["Customer"] is None  # everything before the range is still owed


def test_a_first_pull_with_quickbooks_clock_fifteen_minutes_ahead(company: Company) -> None:
    company.qbo.customer("Grace Hopper")
    with company.qbo.admin.clock_advanced(15 * 60):
        company.pull()  # from the beginning of time: CDC is asked from 30 days back, on QuickBooks' clock
    assert {row["display_name"] for row in company.rows(s.customers)} == {"Grace Hopper"}
