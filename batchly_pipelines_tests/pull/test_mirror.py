"""Reading windows into the mirror: paging edge cases against the sandbox."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from batchly_pipelines.quickbooks.client import WriteOp
from batchly_pipelines.services.pull.mirror import Window, changed_pages
from batchly_pipelines.services.pull.organization import pull_customers
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.support.pull import Company


def _create_customers(company: Company, count: int, prefix: str) -> None:
    ops = [
        WriteOp(n, "Customer", "create", {"DisplayName": f"{prefix} {n}"}, f"{prefix}-{n}")
        for n in range(count)
    ]
    assert all(result.ok for result in company.client.write_batch(ops))


def test_more_than_a_page_of_changes_in_one_second_are_all_read_once(
    company: Company, caplog: pytest.LogCaptureFixture
) -> None:
    company.qbo.admin.set_faults(company.qbo.realm_id, same_second=True)
    _create_customers(company, 1005, "Same second")
    company.qbo.admin.set_faults(company.qbo.realm_id, same_second=False)
    _create_customers(company, 3, "Later")
    window = Window(utcnow() - timedelta(hours=1), utcnow() + timedelta(hours=1))
    ids = [obj["Id"] for page in changed_pages(company.client, "Customer", window) for obj in page]
    assert len(ids) == len(set(ids)) == 1008

    stats = pull_customers(company.engine, company.client, company.org, window)
    assert (stats.pulled, stats.changed) == (1008, 1008)
    with company.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(s.qbo_mirror)).scalar_one() == 1008
    again = pull_customers(company.engine, company.client, company.org, window)
    assert (again.pulled, again.changed) == (1008, 0)  # nothing new: nothing written
    # CDC cannot page past that second: the customers' deletions are looked for by absence instead
    assert "looking for deleted Customer by absence" in caplog.text


def test_a_window_reads_only_its_own_changes_and_inactive_ones_too(company: Company) -> None:
    _create_customers(company, 2, "Early")
    company.act(
        "deactivate", entity="Customer", id=company.qbo.query("SELECT * FROM Customer")["Customer"][0]["Id"]
    )
    start = utcnow().replace(microsecond=0) + timedelta(seconds=1)
    time.sleep(1.1)  # QuickBooks stamps whole seconds
    _create_customers(company, 1, "Late")
    late = list(changed_pages(company.client, "Customer", Window(start, start + timedelta(days=1))))
    assert [obj["DisplayName"] for page in late for obj in page] == ["Late 0"]
    early = [
        obj
        for page in changed_pages(company.client, "Customer", Window(start - timedelta(hours=1), start))
        for obj in page
    ]
    assert sorted(obj["Active"] for obj in early) == [False, True]
