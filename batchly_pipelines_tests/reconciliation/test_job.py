"""``reconcile_company`` in Dagster: ERROR checks that list each differing record, and what the run repaired."""

from __future__ import annotations

import pytest
from dagster import AssetCheckSeverity, DagsterInstance, ExecuteInProcessResult, materialize

from batchly_pipelines.definitions import defs
from batchly_pipelines.defs.partitions import COMPANY, company_key, company_partitions
from batchly_pipelines.defs.reconciliation.job import company_reconciliation
from batchly_pipelines.defs.resources import BatchlyDatabase, QuickBooksResource
from batchly_pipelines.store import schema as s
from batchly_pipelines_tests.reconciliation.switch import switch_after_the_read
from batchly_pipelines_tests.support.pull import Company


def _materialize(company: Company, repair: bool = True) -> ExecuteInProcessResult:
    """The job's asset executed in-process over the organisation's company partition (and another company's key,
    which it must not touch)."""
    url = company.engine.url.render_as_string(hide_password=False)
    instance = DagsterInstance.ephemeral()
    key = company_key(company.org, "Acme Trading")
    instance.add_dynamic_partitions(COMPANY, [company_key(company.org + 1000, "Other"), key])
    return materialize(
        [company_reconciliation],
        instance=instance,
        partition_key=key,
        resources={
            "batchly_db": BatchlyDatabase(database_url=url),
            "quickbooks": QuickBooksResource(database_url=url),
        },
        run_config={"ops": {"company_reconciliation": {"config": {"repair": repair}}}},
        raise_on_error=False,
    )


def _run(company: Company, repair: bool) -> dict[str, object]:
    """A successful run's materialisation metadata and its check evaluations by name."""
    result = _materialize(company, repair)
    assert result.success
    [materialization] = result.asset_materializations_for_node("company_reconciliation")
    return {
        "materialization": materialization.metadata,
        **{check.check_name: check for check in result.get_asset_check_evaluations()},
    }


def test_the_checks_fail_listing_each_difference_until_the_run_repairs_them(connected: Company) -> None:
    job = defs.resolve_job_def("reconcile_company")
    assert job.partitions_def == company_partitions  # the pull assets' company partitions
    company = connected
    grace = company.qbo.customer("Grace Hopper")  # never pulled

    looked = _run(company, repair=False)
    check = looked["customers_reconciled"]
    assert not check.passed and check.severity is AssetCheckSeverity.ERROR  # type: ignore[attr-defined]
    [row] = [record.data for record in check.metadata["listed"].value.records]  # type: ignore[attr-defined]
    assert row["status"] == "open" and row["field"] == "record" and row["quickbooks"] == "Grace Hopper"
    assert (
        grace["Id"] in row["record"] and row["why"] == "only in QuickBooks: no Batchly record is linked to it"
    )
    assert looked["items_reconciled"].passed and looked["invoices_reconciled"].passed  # type: ignore[attr-defined]
    key = company_key(company.org, "Acme Trading")
    assert {looked[name].partition for name in ("customers_reconciled", "items_reconciled")} == {key}  # type: ignore[attr-defined]

    repaired = _run(company, repair=True)
    assert all(
        repaired[name].passed for name in ("customers_reconciled", "items_reconciled", "invoices_reconciled")
    )  # type: ignore[attr-defined]
    metadata = repaired["materialization"]
    assert metadata["repaired"].value == 1 and metadata["open"].value == 0  # type: ignore[index]
    assert company.row(s.customers, qbo_id=grace["Id"])["display_name"] == "Grace Hopper"


def test_a_switch_to_another_company_during_the_run_fails_it_with_a_sentence_and_writes_nothing(
    connected: Company, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Dagster path of ``CompanyMismatch``: the run goes red (no retry) saying which organisation and company,
    and nothing from the old company's books is written."""
    company = connected
    company.qbo.customer("Ada")
    company.pull()
    company.qbo.customer("Grace")  # not pulled: a repair would create it
    switch_after_the_read(company, monkeypatch)
    result = _materialize(company)
    assert not result.success
    [failure] = [event for event in result.all_events if event.event_type_value == "STEP_FAILURE"]
    error = failure.step_failure_data.error
    assert error is not None and error.cls_name == "Failure"
    assert (
        f"organisation {company.org} is not connected to QuickBooks company {company.qbo.realm_id}"
        in error.message
    )
    assert failure.step_failure_data.user_failure_data is not None  # a Failure, not a crash with a traceback
    assert not [event for event in result.all_events if event.event_type_value == "STEP_UP_FOR_RETRY"]
    assert [row["display_name"] for row in company.rows(s.customers)] == ["Ada"]  # Grace was not created
    # the switch's unlink cleared the mirror; nothing of the old books came back
    assert company.rows(s.qbo_mirror) == []
