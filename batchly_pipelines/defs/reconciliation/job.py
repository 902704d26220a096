"""``reconcile_company``: one organisation's full reconciliation with its QuickBooks company (issue 10's safety
net), as a job materialising ``company_reconciliation`` with three ERROR checks.

Partitioned like the pull assets by ``company`` (one dynamic key per connected organisation, ``slug-id``): a run
reconciles the organisation its partition names, so an operator runs it per company from the UI or backfills many.
Run config: ``ops: {company_reconciliation: {config: {repair: false}}}`` only compares (default: repair). The
work is :func:`batchly_pipelines.services.reconciliation.company.reconcile_company`. Each check —
``customers_reconciled``, ``items_reconciled``, ``invoices_reconciled`` — fails while a difference of its entity is
*open* (nothing explains it and no push of it is waiting), and lists every difference it found in a table: record,
field, Batchly value, QuickBooks value, why, what explains it, what was done. The materialisation says what was
repaired. The checks are evaluated by the same step, on the same read.
"""

from collections.abc import Sequence

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    asset,
    define_asset_job,
)
from pydantic import Field

from batchly_pipelines.defs.monitoring.tables import table
from batchly_pipelines.defs.partitions import company_partitions, organization_id
from batchly_pipelines.defs.resources import BatchlyDatabase, QuickBooksResource
from batchly_pipelines.quickbooks.errors import AuthError, ReauthorizationRequired
from batchly_pipelines.services.reconciliation.company import CompanyReconciliation, reconcile_company
from batchly_pipelines.services.reconciliation.compare import Difference
from batchly_pipelines.store.connections import CompanyMismatch

CHECKS = {"customer": "customers_reconciled", "item": "items_reconciled", "invoice": "invoices_reconciled"}
TABLE_ROWS = 500  # rows shown per check; the counts cover all of them
DIFFERENCE_COLUMNS = [
    TableColumn("status", "string", description="open (fails the check), queued (a push waits), explained"),
    TableColumn("record", "string", description="Batchly id, name or DocNumber, QuickBooks id"),
    TableColumn(
        "field", "string", description="the Batchly column, or 'record' when one side lacks the record"
    ),
    TableColumn("batchly", "string"),
    TableColumn("quickbooks", "string"),
    TableColumn("why", "string"),
    TableColumn(
        "explained_by", "string", description="the open conflict or listed error that accounts for it"
    ),
    TableColumn(
        "repair", "string", description="what the rules allow (and this run did, unless repair: false)"
    ),
]


class ReconcileCompanyConfig(Config):
    """Whether the reconciliation of the partition's organisation repairs."""

    repair: bool = Field(default=True, description="Repair what the rules allow (false: only compare).")


def _rows(result: CompanyReconciliation, found: Sequence[Difference]) -> list[dict[str, str]]:
    ordered = sorted(found, key=lambda d: ("open", "queued", "explained").index(result.status(d)))
    return [{"status": result.status(d), **d.as_row()} for d in ordered[:TABLE_ROWS]]


def _check(result: CompanyReconciliation, entity: str) -> AssetCheckResult:
    found = result.of(entity)
    still_open = result.of(entity, "open")
    counts = {status: len(result.of(entity, status)) for status in ("open", "queued", "explained")}
    repaired = [d for d in result.repaired if d.entity == entity]
    if still_open:
        description = f"{len(still_open)} {entity} difference(s) nothing explains, e.g. {still_open[0].record} {still_open[0].field}: {still_open[0].why}"
    elif found:
        description = f"every {entity} difference is explained or has a push waiting ({len(found)})"
    else:
        description = f"every {entity} agrees with QuickBooks"
    return AssetCheckResult(
        check_name=CHECKS[entity],
        passed=not still_open,
        severity=AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "organization_id": result.organization_id,
            "records": result.records.get(entity, 0),
            "differences": len(found),
            **counts,
            "repaired": len(repaired),
            "listed": table(DIFFERENCE_COLUMNS, _rows(result, found)),
        },
    )


@asset(
    description="A full comparison of one organisation with its whole QuickBooks company (ID sets, every synced "
    "field, invoice totals and balances), repairing what the rules allow.",
    check_specs=[
        AssetCheckSpec(
            name,
            asset="company_reconciliation",
            description=f"Every {entity} agrees with QuickBooks, or an open conflict, a listed error or a waiting "
            "push says why; fails (ERROR) listing each record and field that differs.",
            partitions_def=company_partitions,  # each company's result is kept under its partition
        )
        for entity, name in CHECKS.items()
    ],
    pool="qbo_api",
    kinds={"quickbooks", "python"},
    partitions_def=company_partitions,
)
def company_reconciliation(
    context: AssetExecutionContext,
    config: ReconcileCompanyConfig,
    batchly_db: BatchlyDatabase,
    quickbooks: QuickBooksResource,
) -> MaterializeResult:
    """Read the partition's organisation's whole company, repair what the rules allow, and report what still
    differs."""
    org = organization_id(context.partition_key)
    try:
        with quickbooks.client_for(org) as client:
            result = reconcile_company(
                batchly_db.engine,
                client,
                org,
                repair=config.repair,
                log=context.log.info,
                run_id=context.run.run_id,
            )
    except (LookupError, CompanyMismatch, AuthError, ReauthorizationRequired) as exc:
        raise Failure(description=str(exc), allow_retries=False) from None
    summary = result.summary()
    context.log.info(f"organisation {org}: {summary}")
    for difference in (d for d in result.differences if result.status(d) == "open"):
        context.log.error(f"{difference.record} {difference.field}: {difference.why}")
    repaired = [{"status": "repaired", **d.as_row()} for d in result.repaired[:TABLE_ROWS]]
    return MaterializeResult(
        metadata={
            **{key: value for key, value in summary.items() if isinstance(value, int | float | str)},
            "quickbooks_counts": MetadataValue.json(summary["quickbooks_counts"]),
            "repairs": table(DIFFERENCE_COLUMNS, repaired),
        },
        check_results=[_check(result, entity) for entity in CHECKS],
    )


reconcile_company_job = define_asset_job(
    "reconcile_company",
    selection=[company_reconciliation],
    description="Full reconciliation of one organisation (its company partition) with its QuickBooks company.",
)
