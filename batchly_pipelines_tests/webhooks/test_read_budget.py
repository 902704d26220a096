"""The read budget: every QuickBooks read the client made is counted per app, month and realm in the database; the
budget compares the month's reads with the quota and forecasts the month at the current rate."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import QuickBooksClient, WriteOp
from batchly_pipelines.quickbooks.errors import QboError
from batchly_pipelines.services.connections import client_for_organization
from batchly_pipelines.services.read_budget import expected_pull_reads, read_budget, read_cost_note
from batchly_pipelines.settings import Settings
from batchly_pipelines.store.read_budget import DatabaseReadMeter, month_of, reads_in_month
from batchly_pipelines_tests.support.pull import Company
from batchly_pipelines_tests.support.quickbooks import SandboxTokens

APP = "batchly-test-app"


class CountingMeter:
    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()

    def count(self, kind: str) -> None:
        self.kinds[kind] += 1

    def exhausted(self) -> str | None:
        return None


def test_the_client_counts_the_reads_quickbooks_answered_and_nothing_else(company: Company) -> None:
    meter = CountingMeter()
    base = company.sandbox.base_url
    realm = company.qbo.realm_id
    customer = company.qbo.customer("Metered")
    with QuickBooksClient(realm, base, SandboxTokens(base, realm), read_meter=meter) as client:
        client.read("Customer", customer["Id"])
        client.read_many("Customer", [customer["Id"]])
        client.cdc(["Customer"], datetime.now(UTC) - timedelta(hours=1))
        with pytest.raises(QboError):  # a fault is not a metered read
            client.query("SELECT * FROM Nothing")
        client.write_batch([WriteOp("c", "Customer", "create", {"DisplayName": "Written"}, "meter-write-1")])
    assert meter.kinds == Counter({"read": 1, "query": 1, "cdc": 1})


def test_reads_are_counted_per_app_month_and_realm_in_the_database(engine: Engine) -> None:
    november = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)
    december = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC)
    clock = iter([november, november, december])
    meter = DatabaseReadMeter(engine, APP, "111", now=lambda: next(clock))
    for kind in ("query", "cdc", "query"):
        meter.count(kind)
    DatabaseReadMeter(engine, APP, "222", now=lambda: december).count("read")
    DatabaseReadMeter(engine, "another-app", "111", now=lambda: december).count("read")
    assert month_of(november) == "2026-11"
    assert reads_in_month(engine, APP, "2026-11") == {"111": 2}
    assert reads_in_month(engine, APP, "2026-12") == {"111": 1, "222": 1}
    assert reads_in_month(engine, "another-app", "2026-12") == {"111": 1}


def test_the_budget_warns_at_80_percent_and_forecasts_the_month(engine: Engine) -> None:
    day_10 = datetime(2026, 12, 11, 0, 0, tzinfo=UTC)  # 10 of December's 31 days are over
    meter = DatabaseReadMeter(engine, APP, "111", now=lambda: day_10)
    for _ in range(30):
        meter.count("query")
    low = read_budget(engine, APP, quota=100, now=day_10)
    assert (low.reads, low.used, low.level) == (30, 0.3, "ok")
    assert low.forecast == 93  # 30 reads in 10 days → 93 by the 31st
    assert low.by_realm == {"111": 30}
    for _ in range(50):
        meter.count("query")
    warned = read_budget(engine, APP, quota=100, now=day_10)
    assert (warned.reads, warned.level) == (80, "warn")
    assert warned.forecast == 248
    assert "80 % of the monthly quota of 100" in warned.sentence()
    assert "248" in warned.sentence()
    for _ in range(20):
        meter.count("query")
    assert read_budget(engine, APP, quota=100, now=day_10).level == "exhausted"


def test_a_pulls_expected_read_cost_is_said_before_it_starts(engine: Engine) -> None:
    # three partitions of customers (2,500 rows changed each: 3 pages) and one CDC each
    assert expected_pull_reads(partitions=3, rows_per_entity={"Customer": 2500}, cdc_per_partition=1) == 12
    assert expected_pull_reads(partitions=2, rows_per_entity={"Customer": 0, "Item": 999}) == 4
    now = datetime(2026, 12, 11, tzinfo=UTC)
    DatabaseReadMeter(engine, APP, "111", now=lambda: now).count("query")
    note = read_cost_note(engine, APP, 12, quota=1000, now=now)
    assert note == (
        "expected QuickBooks reads: about 12 (1.2 % of the monthly quota of 1,000; "
        "1 used this month, 999 left)"
    )


def test_every_client_the_sync_builds_counts_its_reads_in_the_database(
    company: Company, secret_key: str
) -> None:
    settings = Settings.from_env(
        {
            "QBO_ENVIRONMENT": "local",
            "QBO_BASE_URL": company.sandbox.base_url,
            "BATCHLY_SECRET_KEY": secret_key,
        }
    )
    with client_for_organization(company.engine, settings, company.org) as client:
        client.count("Customer")
        client.read_many("Item", ["1"])
    month = month_of(datetime.now(UTC))
    assert reads_in_month(company.engine, settings.qbo_client_id, month) == {company.qbo.realm_id: 2}
