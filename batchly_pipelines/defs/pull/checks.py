"""Asset checks of the pull: mirror vs Batchly drift, invoice totals, payment status, and QuickBooks records Batchly
could not store (the pull's error list). Conflicts waiting for review are ``sync_status``'s ``no_open_conflicts``, kept
live by ``sync_status_sensor`` (a check here would stay red after a resolve until the next pull).

A check evaluates the organisations of the run's company partitions (from its tags), or every connected one when it runs on
its own — all of them at once, set-based (a statement per thousand records, not a few per organisation; the payment
check still loads the mirrored payments its invoices name per organisation), and reports them per organisation. The
work is in ``services.pull.checks``.
"""

from collections.abc import Callable, Mapping

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    MetadataValue,
    asset_check,
)

from batchly_pipelines.defs.partitions import run_organizations
from batchly_pipelines.defs.pull.assets import batchly_customers, batchly_invoice_payments, batchly_items
from batchly_pipelines.defs.resources import BatchlyDatabase
from batchly_pipelines.rules.name_lists import CUSTOMERS, ITEMS
from batchly_pipelines.rules.payments import today_in
from batchly_pipelines.services.pull import checks as pull_checks
from batchly_pipelines.services.pull.checks import CheckOutcome
from batchly_pipelines.store.organizations import organization_timezones
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines.store.status import connected_organization_ids


def _organizations(context: AssetCheckExecutionContext, database: BatchlyDatabase) -> list[int]:
    return run_organizations(context.run.tags, context.instance) or connected_organization_ids(
        database.engine
    )


def _outcome_result(
    context: AssetCheckExecutionContext,
    database: BatchlyDatabase,
    check: Callable[[list[int]], Mapping[int, CheckOutcome]],
    what: str,
) -> AssetCheckResult:
    """``check`` over the run's organisations at once (set-based: a statement per thousand records, not per
    organisation), reported per organisation."""
    outcomes = check(_organizations(context, database))
    failed = sum(o.failed for o in outcomes.values())
    examples = [{"organization": org, **ex} for org, o in outcomes.items() for ex in o.examples]
    return AssetCheckResult(
        passed=failed == 0,
        metadata={
            "checked": sum(o.checked for o in outcomes.values()),
            "failed": failed,
            "examples": MetadataValue.json(examples),
        },
        description=f"{failed} {what}" if failed else f"no {what}",
    )


@asset_check(
    asset=batchly_customers, description="Linked customers differ from the mirrored QuickBooks version."
)
def customers_match_quickbooks(
    context: AssetCheckExecutionContext, batchly_db: BatchlyDatabase
) -> AssetCheckResult:
    return _outcome_result(
        context,
        batchly_db,
        lambda orgs: pull_checks.records_drift(batchly_db.engine, CUSTOMERS, orgs),
        "drifted customers",
    )


@asset_check(asset=batchly_items, description="Linked items differ from the mirrored QuickBooks version.")
def items_match_quickbooks(
    context: AssetCheckExecutionContext, batchly_db: BatchlyDatabase
) -> AssetCheckResult:
    return _outcome_result(
        context,
        batchly_db,
        lambda orgs: pull_checks.records_drift(batchly_db.engine, ITEMS, orgs),
        "drifted items",
    )


@asset_check(asset=batchly_invoice_payments, description="Batchly invoice totals equal QuickBooks' TotalAmt.")
def invoice_totals_match(
    context: AssetCheckExecutionContext, batchly_db: BatchlyDatabase
) -> AssetCheckResult:
    return _outcome_result(
        context,
        batchly_db,
        lambda orgs: pull_checks.invoices_totals(batchly_db.engine, orgs),
        "invoices whose total differs from QuickBooks",
    )


@asset_check(
    asset=batchly_invoice_payments,
    description="Payment columns of synced invoices agree with the mirrored QuickBooks invoice and payments.",
)
def payment_status_consistent(
    context: AssetCheckExecutionContext, batchly_db: BatchlyDatabase
) -> AssetCheckResult:
    def check(orgs: list[int]) -> Mapping[int, CheckOutcome]:
        now = utcnow()
        zones = organization_timezones(batchly_db.engine, orgs)  # each organisation's today, in one statement
        return pull_checks.payments_status(
            batchly_db.engine, {org: today_in(zones[org], now) for org in orgs if org in zones}
        )

    return _outcome_result(context, batchly_db, check, "invoices with inconsistent payment columns")


def _stored_result(
    context: AssetCheckExecutionContext, database: BatchlyDatabase, entity: str, what: str
) -> AssetCheckResult:
    return _outcome_result(
        context,
        database,
        lambda orgs: pull_checks.unstored_by_organization(database.engine, orgs, entity),
        what,
    )


@asset_check(
    asset=batchly_customers,
    description="QuickBooks customers Batchly could not store (a value its columns cannot hold), by record and field.",
)
def customers_stored(context: AssetCheckExecutionContext, batchly_db: BatchlyDatabase) -> AssetCheckResult:
    return _stored_result(context, batchly_db, CUSTOMERS.qbo_entity, "customer values Batchly cannot store")


@asset_check(
    asset=batchly_items,
    description="QuickBooks items Batchly could not store (a value its columns cannot hold), by record and field.",
)
def items_stored(context: AssetCheckExecutionContext, batchly_db: BatchlyDatabase) -> AssetCheckResult:
    return _stored_result(context, batchly_db, ITEMS.qbo_entity, "item values Batchly cannot store")


@asset_check(
    asset=batchly_invoice_payments,
    description="Invoices whose QuickBooks payment figures Batchly could not store, by record and field.",
)
def invoice_payments_stored(
    context: AssetCheckExecutionContext, batchly_db: BatchlyDatabase
) -> AssetCheckResult:
    return _stored_result(context, batchly_db, "Invoice", "invoice payment values Batchly cannot store")
