"""The pull as partitioned assets: QuickBooks entities (external) → mirrors ``qbo_*`` → reconciled ``batchly_*``.

Partitions are company x day (``partitions.pull_partitions``). A run over several days of a company — a backfill of a
range runs as one (``BackfillPolicy.single_run``) — pulls one window, not one per day. Every materialisation reports
rows pulled, changed, created, deactivated, conflicts, QuickBooks calls and duration. The work itself is in
``services.pull``; these functions only wire it to Dagster.
"""

from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetSpec,
    BackfillPolicy,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from batchly_pipelines.defs.partitions import pull_partitions, run_partition_keys, windows_by_organization
from batchly_pipelines.defs.resources import BatchlyDatabase, QuickBooksResource
from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.rules.mapping import CUSTOMER_FIELDS
from batchly_pipelines.services.pull.checks import unstored_records
from batchly_pipelines.services.pull.mirror import Window
from batchly_pipelines.services.pull.organization import (
    PullStats,
    pull_customers,
    pull_items,
    pull_payments,
    reconcile_customers,
    reconcile_invoice_payments,
    reconcile_items,
)
from batchly_pipelines.services.pull.reconcile import ReconcileStats
from batchly_pipelines.store.db import Engine

QBO_GROUP, MIRROR_GROUP, BATCHLY_GROUP = "quickbooks", "quickbooks_mirror", "batchly"


def _quickbooks(entity: str, description: str) -> AssetSpec:
    """An entity in each organisation's QuickBooks Online company: upstream of the mirrors, outside Dagster."""
    return AssetSpec(
        AssetKey(["quickbooks", entity]), group_name=QBO_GROUP, kinds={"quickbooks"}, description=description
    )


quickbooks_customers = _quickbooks("Customer", "Customers in QuickBooks Online.")
quickbooks_items = _quickbooks("Item", "Items (products and services) in QuickBooks Online.")
quickbooks_invoices = _quickbooks("Invoice", "Invoices in QuickBooks Online (TotalAmt, Balance, LinkedTxn).")
quickbooks_payments = _quickbooks("Payment", "Payments in QuickBooks Online.")

PullStep = Callable[[Engine, QuickBooksClient, int, Window], PullStats]


def _mirror(
    context: AssetExecutionContext,
    batchly_db: BatchlyDatabase,
    quickbooks: QuickBooksResource,
    step: PullStep,
) -> MaterializeResult:
    """Run a pull step for every organisation in the run's partitions, one window each, and report it."""
    rows = []
    for organization_id, window in windows_by_organization(run_partition_keys(context)).items():
        with quickbooks.client_for(organization_id) as client:
            stats = step(batchly_db.engine, client, organization_id, window)
        context.log.info("organisation %s %s: %s", organization_id, window, stats.by_entity)
        rows.append(
            {
                "organization": organization_id,
                "window": f"{window.start:%Y-%m-%d %H:%M} → {window.end:%Y-%m-%d %H:%M} UTC",
                **{k: v for k, v in asdict(stats).items() if k not in ("window", "entities", "by_entity")},
            }
        )
    return _recorded(context, _result(rows, "pulled"))


def _result(rows: list[dict[str, Any]], row_count: str) -> MaterializeResult:
    """Metadata: totals of every numeric column, the row count, and a per-organisation table."""
    frame = pd.DataFrame(rows)
    totals: dict[str, Any] = {
        column: MetadataValue.int(int(frame[column].sum()))
        for column in frame.columns
        if column not in ("organization", "duration_s") and pd.api.types.is_integer_dtype(frame[column])
    }
    return MaterializeResult(
        metadata={
            "dagster/row_count": MetadataValue.int(int(frame[row_count].sum()) if len(frame) else 0),
            **totals,
            "duration_s": MetadataValue.float(float(frame["duration_s"].sum()) if len(frame) else 0.0),
            "organizations": MetadataValue.md(frame.to_markdown(index=False) if len(frame) else "_none_"),
        }
    )


def _reconciled(
    context: AssetExecutionContext,
    engine: Engine,
    reconcile: Callable[[int], Mapping[str, Any]],
    row_count: str,
    entity: str,
) -> MaterializeResult:
    """Run a reconciliation for every organisation in the run's partitions and report it, with the QuickBooks
    ``entity`` records Batchly could not store (record and field) under ``unstored``."""
    organizations = windows_by_organization(run_partition_keys(context))
    rows = [
        {"organization": organization_id, **reconcile(organization_id)} for organization_id in organizations
    ]
    context.log.info("reconciled: %s", rows)
    result = _result(rows, row_count)
    unstored = [
        {"organization": organization_id, **example}
        for organization_id in organizations
        for example in unstored_records(engine, organization_id, entity).examples
    ]
    if unstored:
        context.log.warning("QuickBooks %s records Batchly cannot store: %s", entity, unstored)
    metadata = {**(result.metadata or {}), "unstored": MetadataValue.json(unstored)}
    return _recorded(context, MaterializeResult(metadata=metadata))


def _recorded(context: AssetExecutionContext, result: MaterializeResult) -> MaterializeResult:
    """``result``, recorded for every partition the run materialised. Dagster records it for the partitions it
    believes the run has (``context.partition_keys``), which for a range run launched from a job page is only the
    first: the others get their materialisation here."""
    believed = set(context.partition_keys)
    for key in run_partition_keys(context):
        if key not in believed:
            context.log_event(
                AssetMaterialization(context.asset_key, partition=key, metadata=result.metadata)
            )
    return result


def _with_changed(stats: ReconcileStats) -> dict[str, Any]:
    """A reconciliation's numbers, with the Batchly records it changed."""
    return asdict(stats) | {"changed": stats.changed}


MIRROR_ASSET: dict[str, Any] = {
    "partitions_def": pull_partitions,
    "backfill_policy": BackfillPolicy.single_run(),
    "pool": "qbo_api",
    "group_name": MIRROR_GROUP,
    "kinds": {"quickbooks", "sql"},
}
RECONCILED_ASSET: dict[str, Any] = {
    "partitions_def": pull_partitions,
    "backfill_policy": BackfillPolicy.single_run(),
    "group_name": BATCHLY_GROUP,
    "kinds": {"sql"},
}


@asset(
    deps=[quickbooks_customers],
    description="Customers QuickBooks changed in the partition's window (inactive included, CDC deletions within "
    "30 days), mirrored into qbo_mirror.",
    **MIRROR_ASSET,
)
def qbo_customers(
    context: AssetExecutionContext, batchly_db: BatchlyDatabase, quickbooks: QuickBooksResource
) -> MaterializeResult:
    return _mirror(context, batchly_db, quickbooks, pull_customers)


@asset(
    deps=[quickbooks_items],
    description="Items QuickBooks changed in the partition's window, mirrored into qbo_mirror.",
    **MIRROR_ASSET,
)
def qbo_items(
    context: AssetExecutionContext, batchly_db: BatchlyDatabase, quickbooks: QuickBooksResource
) -> MaterializeResult:
    return _mirror(context, batchly_db, quickbooks, pull_items)


@asset(
    deps=[quickbooks_payments, quickbooks_invoices],
    description="Payments and invoices QuickBooks changed in the window, the invoices changed or deleted payments "
    "apply to (Id IN, never one call per invoice), mirrored into qbo_mirror.",
    **MIRROR_ASSET,
)
def qbo_payments(
    context: AssetExecutionContext, batchly_db: BatchlyDatabase, quickbooks: QuickBooksResource
) -> MaterializeResult:
    return _mirror(context, batchly_db, quickbooks, pull_payments)


class CustomerMergeConfig(Config):
    """Per-field merge policy for customers."""

    review_fields: list[str] = Field(
        default_factory=list,
        description=f"Customer fields sent to manual review instead of newest-wins, among {', '.join(CUSTOMER_FIELDS)}.",
    )


@asset(
    deps=[qbo_customers],
    description="Batchly customers reconciled with the mirror: three-way merge (newest change wins, or review), "
    "link or review by name, create, deactivate — never delete; conflicts in sync_conflicts.",
    **RECONCILED_ASSET,
)
def batchly_customers(
    context: AssetExecutionContext, config: CustomerMergeConfig, batchly_db: BatchlyDatabase
) -> MaterializeResult:
    def run(organization_id: int) -> dict[str, Any]:
        stats = reconcile_customers(
            batchly_db.engine, organization_id, review_fields=config.review_fields, run_id=context.run.run_id
        )
        return _with_changed(stats)

    return _reconciled(context, batchly_db.engine, run, "changed", "Customer")


@asset(
    deps=[qbo_items],
    description="Batchly items reconciled with the mirror: QuickBooks owns name, SKU, type, price and active; "
    "Batchly owns the description.",
    **RECONCILED_ASSET,
)
def batchly_items(context: AssetExecutionContext, batchly_db: BatchlyDatabase) -> MaterializeResult:
    def run(organization_id: int) -> dict[str, Any]:
        return _with_changed(reconcile_items(batchly_db.engine, organization_id, run_id=context.run.run_id))

    return _reconciled(context, batchly_db.engine, run, "changed", "Item")


@asset(
    deps=[qbo_payments],
    description="Invoice payment columns (amount paid and due, status, last payment date and id) from QuickBooks, "
    "and overdue re-derived for the organisation's today without QuickBooks calls.",
    **RECONCILED_ASSET,
)
def batchly_invoice_payments(
    context: AssetExecutionContext, batchly_db: BatchlyDatabase
) -> MaterializeResult:
    def run(organization_id: int) -> dict[str, Any]:
        return asdict(
            reconcile_invoice_payments(batchly_db.engine, organization_id, run_id=context.run.run_id)
        )

    return _reconciled(context, batchly_db.engine, run, "updated", "Invoice")
