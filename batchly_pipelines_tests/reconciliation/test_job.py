"""``reconcile_company`` in Dagster: ERROR checks that list each differing record, and what the run repaired."""

from __future__ import annotations

from dagster import AssetCheckSeverity, DagsterInstance, materialize

from batchly_pipelines.definitions import defs
from batchly_pipelines.defs.partitions import COMPANY, company_key, company_partitions
from batchly_pipelines.defs.reconciliation.job import company_reconciliation
from batchly_pipelines.defs.resources import BatchlyDatabase, QuickBooksResource
from batchly_pipelines.store import schema as s
from batchly_pipelines_tests.support.pull import Company


def _run(company: Company, repair: bool) -> dict[str, object]:
    """The job's asset executed in-process over the organisation's company partition (and another company's key,
    which it must not touch)."""
    url = company.engine.url.render_as_string(hide_password=False)
    instance = DagsterInstance.ephemeral()
    key = company_key(company.org, "Acme Trading")
    instance.add_dynamic_partitions(COMPANY, [company_key(company.org + 1000, "Other"), key])
    result = materialize(
        [company_reconciliation],
        instance=instance,
        partition_key=key,
        resources={
            "batchly_db": BatchlyDatabase(database_url=url),
            "quickbooks": QuickBooksResource(database_url=url),
        },
        run_config={"ops": {"company_reconciliation": {"config": {"repair": repair}}}},
    )
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

    repaired = _run(company, repair=True)
    assert all(
        repaired[name].passed for name in ("customers_reconciled", "items_reconciled", "invoices_reconciled")
    )  # type: ignore[attr-defined]
    metadata = repaired["materialization"]
    assert metadata["repaired"].value == 1 and metadata["open"].value == 0  # type: ignore[index]
    assert company.row(s.customers, qbo_id=grace["Id"])["display_name"] == "Grace Hopper"
