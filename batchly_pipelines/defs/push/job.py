"""``push_to_quickbooks``: push due records to QuickBooks — many organisations' (a batch) or one organisation's (or
its chosen invoices).

Launched by ``sync_queue_sensor`` for a batch of organisations with due work (``organization_ids``: see
:mod:`.batch`, each organisation reported on its own), or by hand from the launchpad ("Sync to QuickBooks now") with
``organization_id`` and optionally ``doc_numbers`` / ``invoice_ids``. The work lives in
:mod:`batchly_pipelines.services.push.organization`; the ops report progress (done/total, throughput, ETA) as logs and
as observations of the ``sync_status`` asset.

Failures are loud: when a record's last outcome in the run is an error, the run ends FAILED — after every good record
was checkpointed — with an ERROR line per record and a table of them (record, DocNumber or name, field, message,
dead or when it is retried). "Sync now" reports every invoice asked for: pushed, already synced, skipped, failed, dead
(with the reason) or unknown, and fails unless each was pushed, already synced or skipped by rule (a draft).
"""

import threading
import time
from datetime import timedelta
from typing import Any

from dagster import (
    AssetObservation,
    Config,
    Failure,
    In,
    MetadataValue,
    OpExecutionContext,
    Out,
    Output,
    job,
    op,
)
from pydantic import Field

from batchly_pipelines.defs.monitoring import tables
from batchly_pipelines.defs.monitoring.waits import WaitAnnouncer
from batchly_pipelines.defs.push import sync_now
from batchly_pipelines.defs.push.batch import PROGRESS_ASSET, push_batch
from batchly_pipelines.defs.push.lineage import record_pushed
from batchly_pipelines.defs.resources import BatchlyDatabase, QuickBooksResource
from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.quickbooks.errors import AuthError
from batchly_pipelines.services.push.organization import (
    CLAIM_SIZE,
    DEFAULT_LEASE,
    Progress,
    PushAbandoned,
    PushStats,
    RealmBusy,
    database_unreachable,
    push_organization,
    worker_name,
)
from batchly_pipelines.store.db import DATABASE_ERRORS
from batchly_pipelines.store.schema import QUEUE_STATES
from batchly_pipelines.store.status import run_failures

PROGRESS_EVERY_SECONDS = 2.0
LINGER_SECONDS = 15.0


class PushConfig(Config):
    """Which records to push: everything due for one organisation, or only some of its invoices."""

    organization_id: int = Field(
        default=0,
        description="The Batchly organisation whose QuickBooks company receives the push (Sync to QuickBooks now).",
    )
    organization_ids: list[int] = Field(
        default_factory=list,
        description=(
            "A batch (what sync_queue_sensor asks for): push every due record of each of these organisations, "
            "several at a time, each failure reported against its organisation. Instead of organization_id."
        ),
    )
    doc_numbers: list[str] = Field(
        default_factory=list,
        description=(
            "Sync to QuickBooks now: push only the organisation's invoices with these DocNumbers (and the customers "
            "and items they need); each is reported. Empty (and no invoice_ids) = every due record."
        ),
    )
    invoice_ids: list[int] = Field(
        default_factory=list,
        description="… or by Batchly invoice id (with or instead of doc_numbers).",
    )
    claim_size: int = Field(default=CLAIM_SIZE, description="Queue rows claimed per round.")
    linger_seconds: float = Field(
        default=LINGER_SECONDS,
        description=(
            "After the queue runs dry, keep watching it this long (real seconds) for records created meanwhile "
            "(one organisation's run; a batch does not linger)."
        ),
    )
    lease_seconds: float = Field(
        default=DEFAULT_LEASE.total_seconds(),
        description=(
            "How long claimed rows stay leased (a crashed run's rows are picked up again after this), in QuickBooks "
            "time: compressed by QBO_TIME_SCALE like every other wait."
        ),
    )


class _ProgressReporter:
    """Logs and observes progress at most every few seconds (callbacks arrive from the push's threads)."""

    def __init__(self, context: OpExecutionContext, organization_id: int) -> None:
        self.context = context
        self.organization_id = organization_id
        self._lock = threading.Lock()
        self._last = 0.0
        # QuickBooks' window holding the push: why and when it resumes, once per wait
        self.waiting = WaitAnnouncer(context.log.info, f"organisation {organization_id}")

    def __call__(self, progress: Progress, final: bool = False) -> None:
        with self._lock:
            now = time.monotonic()
            if not final and now - self._last < PROGRESS_EVERY_SECONDS:
                return
            self._last = now
            self.context.log.info(f"organisation {self.organization_id}: {progress}")
            eta = progress.eta_seconds
            self.context.log_event(
                AssetObservation(
                    asset_key=PROGRESS_ASSET,
                    metadata={
                        "organization_id": self.organization_id,
                        "done": progress.done,
                        "total": progress.total,
                        "per_minute": MetadataValue.float(round(progress.per_minute, 1)),
                        "eta_seconds": MetadataValue.float(round(eta, 1) if eta is not None else -1.0),
                    },
                )
            )


@op(
    pool="qbo_api",
    out=Out(dict, description="What the push did (actions per entity, failures, API use)."),
    tags={"kind": "quickbooks"},
)
def push_records(
    context: OpExecutionContext,
    config: PushConfig,
    batchly_db: BatchlyDatabase,
    quickbooks: QuickBooksResource,
) -> Output[dict[str, Any]]:
    """Claim, validate and push the organisation's due records; every chunk is checkpointed as it completes.

    A Batchly database that does not answer (or stops answering and stays away: the push asks again first) fails
    the run with a sentence naming the organisation, as the CLI answers — not a traceback; Dagster may retry it.
    """
    if config.organization_ids:
        if config.organization_id or config.doc_numbers or config.invoice_ids:
            raise Failure(
                description=(
                    "organization_ids (a batch of every due record) cannot be combined with organization_id, "
                    "doc_numbers or invoice_ids (Sync to QuickBooks now of one organisation)"
                ),
                allow_retries=False,
            )
        return push_batch(
            context,
            config.organization_ids,
            batchly_db,
            quickbooks,
            claim_size=config.claim_size,
            lease=timedelta(seconds=config.lease_seconds),
        )
    if config.organization_id <= 0:
        raise Failure(
            description="say which organisation to push: organization_id (or organization_ids for a batch)",
            allow_retries=False,
        )
    try:
        return _push_records(context, config, batchly_db, quickbooks)
    except DATABASE_ERRORS as exc:
        raise Failure(
            description=database_unreachable(config.organization_id, exc),
            metadata={"organization_id": config.organization_id, "error": type(exc).__name__},
            allow_retries=True,
        ) from None


def _push_records(
    context: OpExecutionContext,
    config: PushConfig,
    batchly_db: BatchlyDatabase,
    quickbooks: QuickBooksResource,
) -> Output[dict[str, Any]]:
    wanted = sync_now.wanted(
        batchly_db.engine, config.organization_id, config.doc_numbers, config.invoice_ids
    )
    chosen = sorted({w.invoice_id for w in wanted if w.invoice_id is not None}) if wanted else None
    if chosen == []:  # only unknown invoices were asked for: nothing to push
        rows = sync_now.report(context, batchly_db.engine, config.organization_id, wanted)
        raise Failure(
            description=_describe([], rows), metadata={"invoices": tables.sync_now(rows)}, allow_retries=False
        )
    report = _ProgressReporter(context, config.organization_id)
    try:
        client = quickbooks.client_for(config.organization_id)
    except (LookupError, AuthError) as exc:  # never connected, or the connection needs a person
        raise Failure(description=str(exc), allow_retries=False) from None
    with client:
        try:
            stats = _push(context, config, batchly_db, client, report, chosen)
        except (
            RealmBusy,
            PushAbandoned,
            AuthError,
        ) as exc:  # a sentence, not a traceback; records stay queued
            raise Failure(
                description=str(exc),
                metadata=tables.failure_metadata(run_failures(batchly_db.engine, context.run.run_id)),
                allow_retries=isinstance(exc, RealmBusy | PushAbandoned),
            ) from None
    report(Progress(stats.done, stats.total, stats.active_seconds), final=True)  # the linger is no work
    failures = run_failures(batchly_db.engine, context.run.run_id)
    for failure in failures:
        context.log.error(tables.describe_failure(failure))
    if stats.conflicts:  # each one is a sync_conflicts row, and named in its record's sync_log line
        counts = ", ".join(f"{key} {count}" for key, count in sorted(stats.conflicts.items()))
        context.log.info(f"conflicts settled or sent to review (entity.resolution): {counts}")
    rows = sync_now.report(context, batchly_db.engine, config.organization_id, wanted)
    record_pushed(context, config.organization_id, stats.actions)  # lineage: what reached QuickBooks
    summary = stats.as_dict()
    metadata: dict[str, Any] = {
        "done": stats.done,
        "succeeded": stats.done - stats.failed,
        "failed": stats.failed,
        "dead": stats.dead,
        "seconds": MetadataValue.float(round(stats.elapsed_seconds, 2)),
        "actions": MetadataValue.json(summary["actions"]),
        "conflicts": MetadataValue.json(summary["conflicts"]),  # settled or opened, per entity and resolution
        "api_calls": stats.api.get("calls_total", 0),
        "throttled": stats.api.get("throttled", 0),
        **tables.failure_metadata(failures),
        **({"invoices": tables.sync_now(rows)} if wanted else {}),
    }
    if failures or any(row["outcome"] not in sync_now.SETTLED for row in rows):
        raise Failure(description=_describe(failures, rows), metadata=metadata, allow_retries=False)
    return Output(summary, metadata=metadata)


def _push(
    context: OpExecutionContext,
    config: PushConfig,
    batchly_db: BatchlyDatabase,
    client: QuickBooksClient,
    report: _ProgressReporter,
    invoice_ids: list[int] | None,
) -> PushStats:
    return push_organization(
        batchly_db.engine,
        client,
        config.organization_id,
        worker=worker_name(f"run-{context.run.run_id[:8]}"),
        invoice_ids=invoice_ids,
        progress=report,
        waiting=report.waiting,
        run_id=context.run.run_id,
        claim_size=config.claim_size,
        linger_seconds=config.linger_seconds,
        lease=timedelta(seconds=config.lease_seconds),  # QuickBooks time: the push compresses it
    )


def _describe(failures: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    """The run's failure in words: the failed records and the invoices "Sync now" could not settle."""
    parts = []
    if failures:
        parts.append(tables.describe_failures(failures))
    unsettled = [row for row in rows if row["outcome"] not in sync_now.SETTLED]
    if unsettled:
        parts.append(
            "Sync now: "
            + "; ".join(f"{row['requested']} {row['outcome']} ({row['detail']})" for row in unsettled)
        )
    return "\n".join(parts)


@op(ins={"summary": In(dict)})
def record_queue_depth(
    context: OpExecutionContext, summary: dict[str, Any], batchly_db: BatchlyDatabase
) -> None:
    """Observe the organisation's queue depth by state after the push (what is left, what is dead); for a batch,
    the batch's depth summed, in one statement."""
    if "organization_ids" in summary:
        wanted = set(summary["organization_ids"])
        totals = dict.fromkeys(QUEUE_STATES, 0)
        for org, states in batchly_db.queue.depth().items():
            if org in wanted:
                for state, count in states.items():
                    totals[state] = totals.get(state, 0) + count
        context.log.info(f"queue of the batch's {len(wanted)} organisations after the push: {totals}")
        context.log_event(
            AssetObservation(
                asset_key=PROGRESS_ASSET,
                metadata={"organizations": len(wanted), **{f"queue_{k}": v for k, v in totals.items()}},
            )
        )
        return
    organization_id = int(summary["organization_id"])
    depth = batchly_db.queue.depth(organization_id).get(organization_id, dict.fromkeys(QUEUE_STATES, 0))
    context.log.info(f"organisation {organization_id} queue after the push: {depth}")
    context.log_event(
        AssetObservation(
            asset_key=PROGRESS_ASSET,
            metadata={"organization_id": organization_id, **{f"queue_{k}": v for k, v in depth.items()}},
        )
    )


@job(
    description=(
        "Push pending customers, items and invoices to QuickBooks: a batch of organisations (the sensor's runs), "
        "or one organisation's, or its chosen invoices (Sync to QuickBooks now)."
    ),
    tags={"batchly/direction": "push"},
)
def push_to_quickbooks() -> None:
    record_queue_depth(push_records())
