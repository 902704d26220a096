"""Reading a window while the accountant edits in QuickBooks: no version is dropped and no untouched row is lost."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from batchly_pipelines.quickbooks.client import QueryPage
from batchly_pipelines.quickbooks.query import MAX_RESULTS, with_all_active_states
from batchly_pipelines.quickbooks.wire import qbo_last_updated
from batchly_pipelines.services.pull import mirror
from batchly_pipelines.services.pull.mirror import IncompleteSecond, Window
from batchly_pipelines.services.pull.organization import (
    PAYMENT_ENTITIES,
    cursor_name,
    pull_customers,
    window_since_cursor,
)
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.cursors import get_cursor, set_cursor
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.support.pull import Company

POSITION_READ = "ORDERBY Id STARTPOSITION"  # how _one_second reads a crowded second


def _seed_customers(company: Company, count: int, days: int) -> None:
    company.qbo.admin.seed(company.qbo.realm_id, customers=count, items=0, invoices=0, payments=0, days=days)


def _edit(company: Company, customer_id: str) -> dict[str, Any]:
    customer: dict[str, Any] = company.act(
        "update_customer", customer_id=customer_id, fields={"Notes": "edited while the window is read"}
    )["Customer"]
    return customer


def _mirrored(company: Company) -> dict[str, str]:
    """Mirrored customers: QuickBooks id → SyncToken."""
    with company.engine.connect() as conn:
        query = sa.select(s.qbo_mirror.c.qbo_id, s.qbo_mirror.c.sync_token).where(
            s.qbo_mirror.c.entity_type == "Customer"
        )
        return {qbo_id: token for qbo_id, token in conn.execute(query)}


def _edit_last_row_of_first_full_page(company: Company, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Spy on the client: right after the first full page is read, the accountant edits its last row."""
    query, edited = company.client.query, {}

    def spy(statement: str) -> QueryPage:
        page = query(statement)
        if not edited and len(page.rows) == MAX_RESULTS:
            edited.update(_edit(company, page.rows[-1]["Id"]))
        return page

    monkeypatch.setattr(company.client, "query", spy)
    return edited


def test_a_row_edited_while_the_window_is_read_is_mirrored_in_its_new_version(
    company: Company, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed_customers(company, 1200, days=1)
    edited = _edit_last_row_of_first_full_page(company, monkeypatch)
    now = utcnow()
    pull_customers(
        company.engine, company.client, company.org, Window(now - timedelta(days=30), now + timedelta(days=2))
    )
    assert edited, "the window was read in more than one page"
    # the edit moved the row to a later time: it came back on the next page under an id seen before
    assert _mirrored(company)[edited["Id"]] == edited["SyncToken"]
    assert len(_mirrored(company)) == 1200


def test_a_row_edited_while_the_window_is_read_is_not_lost_by_the_next_incremental_pull(
    company: Company, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed_customers(company, 1200, days=1)
    query, edited = company.client.query, {}

    def spy(
        statement: str,
    ) -> QueryPage:  # the edit, then two minutes of QuickBooks' time before the next page
        page = query(statement)
        if not edited and len(page.rows) == MAX_RESULTS:
            edited.update(_edit(company, page.rows[-1]["Id"]))
            company.qbo.admin.advance_clock(120)
        return page

    monkeypatch.setattr(company.client, "query", spy)
    window = window_since_cursor(company.engine, company.org)
    try:
        pull_customers(company.engine, company.client, company.org, window)
        with company.engine.begin() as conn:  # the other entities are as far, so the next window starts there
            mark = get_cursor(conn, company.org, cursor_name("Customer"))
            assert mark is not None
            for entity in ("Item", *PAYMENT_ENTITIES):
                set_cursor(conn, company.org, cursor_name(entity), mark)
        after = window_since_cursor(company.engine, company.org)
        assert after.start > qbo_last_updated(edited)  # the next window starts after the edit
        pull_customers(company.engine, company.client, company.org, after)
    finally:
        company.qbo.admin.advance_clock(-120)
    assert _mirrored(company)[edited["Id"]] == edited["SyncToken"]


def test_an_edit_during_the_read_of_a_crowded_second_loses_no_untouched_row(
    company: Company, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed_customers(company, 1500, days=0)  # more than a page of rows share one second
    query, edits = company.client.query, []

    def spy(statement: str) -> QueryPage:
        page = query(statement)
        if POSITION_READ in statement and not edits:
            time.sleep(
                1.1
            )  # QuickBooks stamps whole seconds: the edit moves the row out of the crowded second
            edits.append(_edit(company, page.rows[0]["Id"]))  # every later row shifts down one position
        return page

    monkeypatch.setattr(company.client, "query", spy)
    now = utcnow()
    pull_customers(
        company.engine, company.client, company.org, Window(now - timedelta(days=30), now + timedelta(days=2))
    )
    assert edits, "the crowded second was read by position"
    every_state = with_all_active_states("Customer", [])
    everything = {c["Id"]: c["SyncToken"] for c in company.client.query_all("Customer", every_state)}
    assert _mirrored(company) == everything


def test_a_crowded_second_that_keeps_changing_fails_the_pull_before_its_cursor_moves(
    company: Company, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed_customers(company, 1500, days=0)
    query, edits = company.client.query, []

    def spy(statement: str) -> QueryPage:
        page = query(statement)
        if POSITION_READ in statement and page.rows:
            if not edits:
                time.sleep(1.1)
            edits.append(_edit(company, page.rows[0]["Id"]))  # every pass sees a row leave
        return page

    monkeypatch.setattr(company.client, "query", spy)
    window = window_since_cursor(company.engine, company.org)
    with pytest.raises(IncompleteSecond):
        pull_customers(company.engine, company.client, company.org, window)
    assert len(edits) >= mirror.SECOND_PASSES
    with company.engine.connect() as conn:
        assert get_cursor(conn, company.org, cursor_name("Customer")) is None
