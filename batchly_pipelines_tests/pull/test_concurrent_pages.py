"""A long window is read in ranges split while readers are idle: pages arrive concurrently (within the client's
in-flight limit), every row is read, and the cursor still stops where every range was read through."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from batchly_pipelines.quickbooks.client import QueryPage
from batchly_pipelines.services.pull.mirror import ServerClock, Window, changed_pages
from batchly_pipelines.services.pull.organization import EPOCH, cursor_name, pull_customers
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.cursors import get_cursor
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.support.pull import Company

ANSWER_DELAY_S = 0.05  # each answer takes this long, so overlapping reads show


def _in_flight(company: Company, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Slow every query down a little and record the most queries in flight at once (a one-item list)."""
    query, lock, now, peak = company.client.query, threading.Lock(), [0], [0]

    def slow(statement: str) -> QueryPage:
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        try:
            time.sleep(ANSWER_DELAY_S)
            return query(statement)
        finally:
            with lock:
                now[0] -= 1

    monkeypatch.setattr(company.client, "query", slow)
    return peak


def test_the_pages_of_a_long_window_are_read_concurrently_each_row_once(
    company: Company, monkeypatch: pytest.MonkeyPatch
) -> None:
    company.qbo.admin.seed(company.qbo.realm_id, customers=6000, items=0, invoices=0, payments=0, days=365)
    peak = _in_flight(company, monkeypatch)
    window = Window(utcnow() - timedelta(days=400), utcnow() + timedelta(hours=1))
    ids = [obj["Id"] for page in changed_pages(company.client, "Customer", window) for obj in page]
    assert len(ids) == len(set(ids)) == 6000
    assert 2 <= peak[0] <= company.client.config.in_flight

    everything = Window(EPOCH, window.end)  # a first cursor is set only by a pull from the beginning of time
    stats = pull_customers(company.engine, company.client, company.org, everything)
    assert (stats.pulled, stats.changed) == (6000, 6000)
    with company.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(s.qbo_mirror)).scalar_one() == 6000
        mark = datetime.fromisoformat(get_cursor(conn, company.org, cursor_name("Customer")) or "")
    assert mark <= window.end


def test_the_cursor_waits_for_the_earliest_range_still_open_when_it_answered_last() -> None:
    lag = timedelta(minutes=1)
    t = datetime(2026, 11, 1, 12, tzinfo=UTC)
    clock = ServerClock()
    clock.finished(t - timedelta(days=30), t + timedelta(seconds=5))  # an old range, read long after its end
    assert clock.complete_until(t + timedelta(hours=1), lag) == t + timedelta(hours=1)
    clock.finished(t + timedelta(hours=1), t + timedelta(seconds=9))  # open at its last answer
    clock.finished(t + timedelta(minutes=30), t + timedelta(seconds=2))  # split off, open, answered earlier
    assert clock.complete_until(t + timedelta(hours=1), lag) == t + timedelta(seconds=2) - lag
    assert ServerClock().complete_until(t, lag) is None
