"""A pull reports its progress while it runs: pages fetched of pages estimated, rows reconciled of rows waiting, ETA."""

from __future__ import annotations

from datetime import timedelta

import pytest

from batchly_pipelines.services.pull import progress as progress_module
from batchly_pipelines.services.pull.organization import pull_customers, reconcile_customers
from batchly_pipelines.services.pull.progress import Progress
from batchly_pipelines_tests.support.pull import Company


def test_an_import_reports_pages_of_the_estimate_and_rows_reconciled(
    company: Company, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress_module, "REPORT_EVERY_S", 0.0)  # every page and batch reported
    company.qbo.admin.seed(company.qbo.realm_id, customers=2500, items=0, invoices=0, payments=0, days=30)
    heard: list[Progress] = []
    pulled = pull_customers(
        company.engine, company.client, company.org, company.window(), progress=heard.append
    )
    mirror = [p for p in heard if p.step == "mirror Customer"]
    assert mirror[0].total == 3 and mirror[0].eta_s is not None  # 2,500 rows: 3 pages, counted once
    last = mirror[-1]
    assert (last.rows, last.finished, last.eta_s) == (2500, True, 0.0) and last.done >= 3
    assert pulled.pulled == 2500
    assert [p.rows for p in mirror] == sorted(p.rows for p in mirror)

    heard.clear()
    stats = reconcile_customers(company.engine, company.org, progress=heard.append)
    assert stats.created == 2500
    assert {p.total for p in heard} == {2500}
    assert [p.done for p in heard] == [1000, 2000, 2500, 2500] and heard[-1].finished
    assert "reconcile customer: 2,500/2,500 rows" in str(heard[-1])


def test_a_window_of_one_page_costs_no_count(company: Company) -> None:
    company.qbo.customer("Ada")
    heard: list[Progress] = []
    pulled = pull_customers(
        company.engine, company.client, company.org, company.window(), progress=heard.append
    )
    assert pulled.api_calls == 2  # the page and CDC, no COUNT(*)
    assert heard[-1].finished and (heard[-1].done, heard[-1].total, heard[-1].rows) == (1, 1, 1)


def test_a_dagster_pull_logs_its_progress(connected: Company) -> None:
    from dagster import instance_for_test

    from batchly_pipelines.definitions import defs
    from batchly_pipelines.defs.partitions import COMPANY, company_key, day_tags
    from batchly_pipelines.defs.resources import BatchlyDatabase, QuickBooksResource
    from batchly_pipelines.store.schema import utcnow

    connected.qbo.admin.seed(connected.qbo.realm_id, customers=1500, items=0, invoices=0, payments=0, days=5)
    url = connected.engine.url.render_as_string(hide_password=False)
    key = company_key(connected.org, "Acme Ltd")
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(COMPANY, [key])
        result = defs.resolve_job_def("pull_customers").execute_in_process(
            instance=instance,
            resources={
                "batchly_db": BatchlyDatabase(database_url=url),
                "quickbooks": QuickBooksResource(database_url=url),
            },
            partition_key=key,
            tags=day_tags(utcnow().date() - timedelta(days=7), utcnow().date()),
        )
        messages = [event.message for event in result.all_events if event.event_type_value == "LOG_MESSAGE"]
        messages += [record.user_message for record in instance.all_logs(result.run_id)]
    assert any(f"company {key}: mirror Customer: " in m and "/2 pages" in m and "done" in m for m in messages)
    assert any(f"company {key}: reconcile customer: 1,500/1,500 rows" in m for m in messages)
