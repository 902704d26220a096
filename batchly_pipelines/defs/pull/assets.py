"""The pull as partitioned assets: QuickBooks entities (external) → mirrors ``qbo_*`` → reconciled ``batchly_*``.

Each pair (``qbo_customers`` → ``batchly_customers``, items, payments) is one step over company partitions
(``partitions.company_partitions``): a run — a nightly batch of companies, a backfill of a range — works on all its
companies in one process, several at a time (``services.fleet``), each company's mirror pull then its reconciliation
in that company's own transactions. The run logs its progress (companies done, failed) as it goes; at the end one
observation per asset holds a table of each company's numbers (rows pulled, changed, created, deactivated, conflicts,
QuickBooks calls, duration, attempts, error) — one event per asset and run, not one per company. When every company
succeeded the step materialises all the run's partitions with the run's
totals, and the asset checks follow. A company that still fails after its retries is left unmaterialised: every
other company is materialised with its own numbers and the step fails at the end, naming each failed company and
why — the run is FAILED and the company's partitions show failed, the others materialised (the checks of that run
are skipped, as after any failed step; the next pull's run evaluates them).

The days a run pulls are its ``batchly/pull/from`` / ``batchly/pull/to`` tags; without them each company is pulled
from where its last pull ended (``partitions.tagged_window``). The work itself is in ``services.pull``.
"""

from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    AssetSpec,
    BackfillPolicy,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)
from pydantic import Field

from batchly_pipelines.defs.monitoring.waits import announce_waits
from batchly_pipelines.defs.partitions import (
    RUNTIME,
    company_partitions,
    keys_by_organization,
    run_company_keys,
    tagged_window,
)
from batchly_pipelines.defs.resources import BatchlyDatabase, QuickBooksResource
from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.rules.mapping import CUSTOMER_FIELDS
from batchly_pipelines.services.fleet import CompanyOutcome, run_fleet
from batchly_pipelines.services.pull.checks import open_conflicts, unstored_records
from batchly_pipelines.services.pull.mirror import Window
from batchly_pipelines.services.pull.organization import (
    PullStats,
    pull_customers,
    pull_items,
    pull_payments,
    reconcile_customers,
    reconcile_invoice_payments,
    reconcile_items,
    window_since_cursor,
)
from batchly_pipelines.services.pull.overlap import (
    Overlapped,
    pull_and_reconcile_customers,
    pull_and_reconcile_items,
)
from batchly_pipelines.services.pull.progress import Progress, ProgressReport
from batchly_pipelines.services.read_budget import backfill_cost_note
from batchly_pipelines.store.db import Engine

QBO_GROUP, MIRROR_GROUP, BATCHLY_GROUP = "quickbooks", "quickbooks_mirror", "batchly"
UNSTORED_SHOWN = 50  # unstored records listed in a run's materialisation
PROGRESS_LINES = 20  # log lines a run writes about its progress

qbo_customers, qbo_items, qbo_payments = (
    AssetKey("qbo_customers"),
    AssetKey("qbo_items"),
    AssetKey("qbo_payments"),
)
batchly_customers = AssetKey("batchly_customers")
batchly_items = AssetKey("batchly_items")
batchly_invoice_payments = AssetKey("batchly_invoice_payments")


def _quickbooks(entity: str, description: str) -> AssetSpec:
    """An entity in each organisation's QuickBooks Online company: upstream of the mirrors, outside Dagster."""
    return AssetSpec(
        AssetKey(["quickbooks", entity]), group_name=QBO_GROUP, kinds={"quickbooks"}, description=description
    )


quickbooks_customers = _quickbooks("Customer", "Customers in QuickBooks Online.")
quickbooks_items = _quickbooks("Item", "Items (products and services) in QuickBooks Online.")
quickbooks_invoices = _quickbooks("Invoice", "Invoices in QuickBooks Online (TotalAmt, Balance, LinkedTxn).")
quickbooks_payments = _quickbooks("Payment", "Payments in QuickBooks Online.")

PullStep = Callable[..., PullStats]  # (engine, client, organization, window, *, progress)
ReconcileStep = Callable[[Engine, int, str, ProgressReport], Mapping[str, Any]]
# both at once, the reconciliation following the mirror's pages: (engine, client, organization, window, run id,
# progress) → the mirror's stats and the reconciliation's numbers
TogetherStep = Callable[
    [Engine, QuickBooksClient, int, Window, str, ProgressReport], tuple[PullStats, Mapping[str, Any]]
]


def _mirror_numbers(stats: PullStats) -> dict[str, Any]:
    numbers: dict[str, Any] = {
        k: v for k, v in asdict(stats).items() if k not in ("window", "entities", "by_entity")
    }
    numbers["window"] = f"{stats.window.start:%Y-%m-%d %H:%M} → {stats.window.end:%Y-%m-%d %H:%M} UTC"
    numbers["dagster/row_count"] = stats.pulled
    return numbers


def _pull_companies(
    context: AssetExecutionContext,
    database: BatchlyDatabase,
    quickbooks: QuickBooksResource,
    pull: PullStep,
    reconcile: ReconcileStep,
    mirror_key: AssetKey,
    reconciled_key: AssetKey,
    entity: str,
    row_count: str,
    together: TogetherStep | None = None,
) -> Iterator[MaterializeResult]:
    """Pull and reconcile every company of the run, several at a time, each company's numbers observed on its
    partition as it finishes. When all succeeded, the run's totals materialise every partition; when some failed,
    each company that succeeded is materialised with its own numbers and the step fails, naming the others. With
    both assets selected and ``together`` given, each company's reconciliation follows its mirror's pages
    (``services.pull.overlap``) instead of waiting for the mirror to end."""
    selected = [key for key in (mirror_key, reconciled_key) if key in context.selected_asset_keys]
    keys = keys_by_organization(run_company_keys(context.run.tags, context.instance))
    window = tagged_window(context.run.tags)
    engine = database.engine

    def work(org: int) -> dict[AssetKey, dict[str, Any]]:
        numbers = {}

        def progress(state: Progress) -> None:  # a long import's pages, rows and ETA in the run's log
            context.log.info("company %s: %s", keys[org], state)

        if mirror_key in selected:
            with quickbooks.client_for(org) as client:
                announce_waits(client, context.log.info, f"company {keys[org]}")
                company_window = window or window_since_cursor(engine, org)
                note = backfill_cost_note(  # a backfill states its reads first (incremental pulls: no COUNTs)
                    engine, client, company_window, step=pull.__name__, range_given=window is not None
                )
                if note is not None:
                    context.log.info("company %s: %s", keys[org], note)
                if together is not None and reconciled_key in selected:
                    pulled, reconciled = together(
                        engine, client, org, company_window, context.run.run_id, progress
                    )
                    numbers[mirror_key] = _mirror_numbers(pulled)
                    numbers[reconciled_key] = _reconciled_row(
                        dict(reconciled), engine, org, entity, row_count
                    )
                    return numbers
                numbers[mirror_key] = _mirror_numbers(
                    pull(engine, client, org, company_window, progress=progress)
                )
        if reconciled_key in selected:
            numbers[reconciled_key] = _reconciled_row(
                dict(reconcile(engine, org, context.run.run_id, progress)), engine, org, entity, row_count
            )
        return numbers

    done = [0, 0]  # companies finished, failed
    step = max(1, len(keys) // PROGRESS_LINES)

    def report(outcome: CompanyOutcome[dict[AssetKey, dict[str, Any]]]) -> None:
        done[0] += 1
        key = keys[outcome.organization_id]
        if outcome.result is None:
            done[1] += 1
            context.log.error(
                "company %s failed after %d attempt(s): %s", key, outcome.attempts, outcome.error
            )
        else:
            for numbers in outcome.result.values():
                if numbers.get("unstored"):
                    context.log.warning(
                        "company %s: records Batchly cannot store: %s", key, numbers["unstored"]
                    )
        if done[0] % step == 0 or done[0] == len(keys):
            context.log.info("%d of %d companies done, %d failed", done[0], len(keys), done[1])

    outcomes = run_fleet(
        keys, work, workers=RUNTIME.company_workers, retry_delay_s=RUNTIME.company_retry_s, on_outcome=report
    )
    for asset_key in selected:  # each company's numbers: one event per asset and run, not one per company
        context.log_event(
            AssetObservation(asset_key, metadata={"companies": _companies_table(keys, outcomes, asset_key)})
        )
    failed = [outcome for outcome in outcomes if outcome.failed]
    context.log.info("%d companies pulled, %d failed", len(outcomes) - len(failed), len(failed))
    if not failed:
        for asset_key in selected:
            yield MaterializeResult(
                asset_key=asset_key, metadata=_totals([o.result[asset_key] for o in outcomes if o.result])
            )
        return
    for outcome in outcomes:
        for asset_key, numbers in (outcome.result or {}).items():
            partition = keys[outcome.organization_id]
            context.log_event(
                AssetMaterialization(asset_key, partition=partition, metadata=_metadata(numbers))
            )
    rows = "\n".join(
        f"| {keys[o.organization_id]} | {o.attempts} | {(o.error or '').replace('|', '/')} |" for o in failed
    )
    raise Failure(
        description=f"{len(failed)} of {len(outcomes)} companies failed: "
        + ", ".join(keys[o.organization_id] for o in failed),
        metadata={
            "failed_companies": MetadataValue.md(f"| company | attempts | error |\n|---|---|---|\n{rows}"),
            "failed": len(failed),
            "succeeded": len(outcomes) - len(failed),
        },
        allow_retries=False,
    )


def _reconciled_row(
    reconciled: dict[str, Any], engine: Engine, org: int, entity: str, row_count: str
) -> dict[str, Any]:
    """One company's reconciliation numbers as the step records them: its row count, and the records Batchly
    could not store when there are any."""
    reconciled["dagster/row_count"] = reconciled[row_count]
    if reconciled.get("errors"):
        reconciled["unstored"] = [
            {"organization": org, **example} for example in unstored_records(engine, org, entity).examples
        ]
    return reconciled


def _companies_table(
    keys: Mapping[int, str],
    outcomes: list[CompanyOutcome[dict[AssetKey, dict[str, Any]]]],
    asset_key: AssetKey,
) -> MetadataValue:
    """A markdown table of each company's numbers for ``asset_key`` (its error when it failed)."""
    rows = [
        {"company": keys[o.organization_id], "attempts": o.attempts, **(o.result or {}).get(asset_key, {})}
        for o in outcomes
    ]
    columns = list(
        dict.fromkeys(k for row in rows for k in row if k not in ("unstored", "dagster/row_count"))
    )
    lines = [f"| {' | '.join(columns)} | error |", "|" + "---|" * (len(columns) + 1)]
    for row, outcome in zip(rows, outcomes, strict=True):
        error = (outcome.error or "").replace("|", "/")
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + f" | {error} |")
    return MetadataValue.md("\n".join(lines))


def _metadata(numbers: Mapping[str, Any]) -> dict[str, Any]:
    """One company's numbers as metadata (its unstored records as JSON)."""
    return {k: MetadataValue.json(v) if k == "unstored" else v for k, v in numbers.items()}


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's metadata: each whole number summed over its companies, the duration summed, the unstored records
    of all of them."""
    totals: dict[str, Any] = {"companies": len(rows)}
    for name in dict.fromkeys(k for row in rows for k in row):
        values = [row[name] for row in rows if name in row]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            totals[name] = sum(values)
    totals["duration_s"] = round(sum(float(row.get("duration_s", 0.0)) for row in rows), 3)
    totals["unstored"] = MetadataValue.json(
        [u for row in rows for u in row.get("unstored", [])][:UNSTORED_SHOWN]
    )
    return totals


def _pull_asset(
    name: str,
    mirror: tuple[AssetKey, list[AssetSpec], str],
    reconciled: tuple[AssetKey, str],
) -> Callable[..., Any]:
    """The decorator of one mirror → reconciled pair as a single step over company partitions."""
    mirror_key, upstream, mirror_description = mirror
    reconciled_key, reconciled_description = reconciled
    return multi_asset(
        name=name,
        specs=[
            AssetSpec(
                mirror_key,
                deps=upstream,
                description=mirror_description,
                group_name=MIRROR_GROUP,
                kinds={"quickbooks", "sql"},
                partitions_def=company_partitions,
                skippable=True,
            ),
            AssetSpec(
                reconciled_key,
                deps=[mirror_key],
                description=reconciled_description,
                group_name=BATCHLY_GROUP,
                kinds={"sql"},
                partitions_def=company_partitions,
                skippable=True,
            ),
        ],
        can_subset=True,
        backfill_policy=BackfillPolicy.single_run(),
        pool="qbo_api",
    )


class CustomerMergeConfig(Config):
    """Per-field merge policy for customers."""

    review_fields: list[str] = Field(
        default_factory=list,
        description=f"Customer fields sent to manual review instead of newest-wins, among {', '.join(CUSTOMER_FIELDS)}.",
    )


def _reconciled_numbers(stats: Any, engine: Engine | None = None, org: int | None = None) -> dict[str, Any]:
    """A reconciliation's counts; for customers and items also ``under_review``: the organisation's conflicts of
    that entity waiting for a person after the run — older ones included, which ``conflicts`` (new in this run)
    and ``review`` (names to link, new in this run) leave out."""
    numbers = asdict(stats)
    entity = numbers.pop("entity", None)
    if hasattr(stats, "changed"):
        numbers["changed"] = stats.changed
    if engine is not None and org is not None and entity is not None:
        numbers["under_review"] = open_conflicts(engine, org).get(entity, 0)
    return numbers


def _overlapped_numbers(done: Overlapped, engine: Engine, org: int) -> dict[str, Any]:
    """The reconciliation's numbers of an overlapped pull, with how much of it ran while the pages arrived:
    ``reconciled_during_mirror`` rows, ``tail_s`` after the mirror ended (``duration_s`` is its whole span)."""
    numbers = _reconciled_numbers(done.reconciled, engine, org)
    numbers["reconciled_during_mirror"] = done.reconciled_during_mirror
    numbers["tail_s"] = done.tail_seconds
    return numbers


def _overlapped(pull_and_reconcile: Callable[..., Overlapped], **options: Any) -> TogetherStep:
    """The step of a run that selects both assets: ``pull_and_reconcile`` (``services.pull.overlap``) reconciles
    each company's records while its mirror's pages arrive; ``options`` are its entity's own (review fields)."""

    def together(
        engine: Engine,
        client: QuickBooksClient,
        org: int,
        window: Window,
        run_id: str,
        progress: ProgressReport,
    ) -> tuple[PullStats, dict[str, Any]]:
        done = pull_and_reconcile(engine, client, org, window, run_id=run_id, progress=progress, **options)
        return done.pulled, _overlapped_numbers(done, engine, org)

    return together


@_pull_asset(
    "pull_customers_step",
    (
        qbo_customers,
        [quickbooks_customers],
        "Customers QuickBooks changed in the run's window (inactive included, CDC deletions within 30 days), "
        "mirrored into qbo_mirror.",
    ),
    (
        batchly_customers,
        "Batchly customers reconciled with the mirror: three-way merge (newest change wins, or review), link or "
        "review by name, create, deactivate — never delete; conflicts in sync_conflicts.",
    ),
)
def customers_pull(
    context: AssetExecutionContext,
    config: CustomerMergeConfig,
    batchly_db: BatchlyDatabase,
    quickbooks: QuickBooksResource,
):
    def reconcile(engine: Engine, org: int, run_id: str, progress: ProgressReport) -> dict[str, Any]:
        stats = reconcile_customers(
            engine, org, review_fields=config.review_fields, run_id=run_id, progress=progress
        )
        return _reconciled_numbers(stats, engine, org)

    yield from _pull_companies(
        context,
        batchly_db,
        quickbooks,
        pull_customers,
        reconcile,
        qbo_customers,
        batchly_customers,
        "Customer",
        "changed",
        _overlapped(pull_and_reconcile_customers, review_fields=config.review_fields),
    )


@_pull_asset(
    "pull_items_step",
    (
        qbo_items,
        [quickbooks_items],
        "Items QuickBooks changed in the run's window, mirrored into qbo_mirror.",
    ),
    (
        batchly_items,
        "Batchly items reconciled with the mirror: QuickBooks owns name, SKU, type, price and active; Batchly owns "
        "the description.",
    ),
)
def items_pull(context: AssetExecutionContext, batchly_db: BatchlyDatabase, quickbooks: QuickBooksResource):
    def reconcile(engine: Engine, org: int, run_id: str, progress: ProgressReport) -> dict[str, Any]:
        return _reconciled_numbers(
            reconcile_items(engine, org, run_id=run_id, progress=progress), engine, org
        )

    yield from _pull_companies(
        context,
        batchly_db,
        quickbooks,
        pull_items,
        reconcile,
        qbo_items,
        batchly_items,
        "Item",
        "changed",
        _overlapped(pull_and_reconcile_items),
    )


@_pull_asset(
    "pull_payments_step",
    (
        qbo_payments,
        [quickbooks_payments, quickbooks_invoices],
        "Payments and invoices QuickBooks changed in the window, the invoices changed or deleted payments apply to "
        "(Id IN, never one call per invoice), mirrored into qbo_mirror.",
    ),
    (
        batchly_invoice_payments,
        "Invoice payment columns (amount paid and due, status, last payment date and id) from QuickBooks, and "
        "overdue re-derived for the organisation's today without QuickBooks calls.",
    ),
)
def payments_pull(
    context: AssetExecutionContext, batchly_db: BatchlyDatabase, quickbooks: QuickBooksResource
):
    def reconcile(engine: Engine, org: int, run_id: str, progress: ProgressReport) -> dict[str, Any]:
        return _reconciled_numbers(reconcile_invoice_payments(engine, org, run_id=run_id))

    yield from _pull_companies(
        context,
        batchly_db,
        quickbooks,
        pull_payments,
        reconcile,
        qbo_payments,
        batchly_invoice_payments,
        "Invoice",
        "updated",
    )
