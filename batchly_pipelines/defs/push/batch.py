"""A batched push: one ``push_to_quickbooks`` run pushes the due records of many organisations.

``sync_queue_sensor`` asks for one run per batch of up to ``BATCHLY_NIGHTLY_BATCH`` organisations with due work
(config ``organization_ids``), not one run — one process — per organisation. Inside the run
:func:`~batchly_pipelines.services.fleet.run_fleet` works on ``BATCHLY_COMPANY_WORKERS`` organisations at a time,
each through :func:`~batchly_pipelines.services.push.organization.push_organization` with its own QuickBooks client
(whose limiter keeps its realm within Intuit's limits), its own transactions and its own realm lock:

- an organisation whose realm's push lock is held (a CLI push, a "Sync now" run) is **skipped**, not failed: the
  lock is not waited for (``lock_wait`` 0), its records stay queued, the sensor's next batch takes it;
- an organisation whose push raises (QuickBooks down, its lease lost, the database gone) is retried after
  ``BATCHLY_COMPANY_RETRY_S`` (three attempts; a connection that needs a person is not retried) and, when it lasts,
  **failed** — as is one whose records failed (each in its run's failed-records table; the queue retries them with
  its backoff). The others' pushes go on: one organisation never fails or blocks another's.

The run is green when no organisation failed, else FAILED at the end with a table naming each failed organisation,
its failed records and the reason, and a description listing them (and the first failed records). Progress
(organisations and records done, records a minute, ETA) is logged and observed on ``sync_status`` every few seconds;
lineage is one materialisation per QuickBooks entity written (summed over the batch, the organisations counted).
A batch does not linger for new records: the sensor's next tick starts the next batch.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from dagster import (
    AssetKey,
    AssetObservation,
    Failure,
    MetadataValue,
    OpExecutionContext,
    Output,
    TableColumn,
)

from batchly_pipelines.defs.monitoring import tables
from batchly_pipelines.defs.monitoring.waits import WaitAnnouncer
from batchly_pipelines.defs.push.lineage import record_pushed_batch
from batchly_pipelines.defs.resources import BatchlyDatabase, QuickBooksResource
from batchly_pipelines.services.fleet import UNMENDABLE, CompanyOutcome, run_fleet
from batchly_pipelines.services.push.organization import (
    Progress,
    PushAbandoned,
    PushStats,
    RealmBusy,
    push_organization,
    worker_name,
)
from batchly_pipelines.settings import RuntimeSettings
from batchly_pipelines.store.status import organization_names, run_failures

PROGRESS_ASSET = AssetKey("sync_status")
PROGRESS_EVERY_SECONDS = 5.0
DESCRIBED = 10  # organisations spelled out in the failure description; the table has them all
SHOWN_RECORDS = 5  # failed records named per organisation in the organisations table

ORGANIZATION_COLUMNS = [
    TableColumn("organization_id", "int"),
    TableColumn("organization", "string", description="the organisation's name"),
    TableColumn("records", "string", description="its records that failed in this run (type id (name))"),
    TableColumn("reason", "string", description="why its push failed"),
    TableColumn("attempts", "int"),
]


@dataclass
class _Skipped:
    """An organisation left for the next run: its realm's push lock was held by another push."""

    reason: str


@dataclass
class _BatchProgress:
    """Progress over the batch: each organisation's latest :class:`Progress`, summed; logged and observed at most
    every ``PROGRESS_EVERY_SECONDS`` (callbacks arrive from the workers' threads)."""

    context: OpExecutionContext
    organizations: int
    started: float = field(default_factory=time.monotonic)
    finished: int = 0
    failed: int = 0
    latest: dict[int, Progress] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last: float = 0.0

    def progress(self, organization_id: int) -> Any:
        def on_progress(progress: Progress, final: bool = False) -> None:
            with self._lock:
                self.latest[organization_id] = progress
            self.report()

        return on_progress

    def finish(self, failed: bool) -> None:
        with self._lock:
            self.finished += 1
            self.failed += failed
        self.report(final=self.finished == self.organizations)

    def report(self, final: bool = False) -> None:
        with self._lock:
            now = time.monotonic()
            if not final and now - self._last < PROGRESS_EVERY_SECONDS:
                return
            self._last = now
            done = sum(p.done for p in self.latest.values())
            total = sum(p.total for p in self.latest.values())
            finished, failed = self.finished, self.failed
        elapsed = max(now - self.started, 1e-6)
        per_minute = done / elapsed * 60
        # what is left: the organisations not finished yet, at the pace of those finished so far
        eta = (self.organizations - finished) * elapsed / finished if finished else -1.0
        self.context.log.info(
            f"{finished} of {self.organizations} organisations done ({failed} failed); records {done}/{total}, "
            f"{per_minute:.0f}/min" + (f", ETA {eta:.0f} s" if eta >= 0 else "")
        )
        self.context.log_event(
            AssetObservation(
                asset_key=PROGRESS_ASSET,
                metadata={
                    "organizations": self.organizations,
                    "organizations_done": finished,
                    "organizations_failed": failed,
                    "done": done,
                    "total": total,
                    "per_minute": MetadataValue.float(round(per_minute, 1)),
                    "eta_seconds": MetadataValue.float(round(eta, 1)),
                },
            )
        )


def push_batch(
    context: OpExecutionContext,
    organization_ids: list[int],
    batchly_db: BatchlyDatabase,
    quickbooks: QuickBooksResource,
    *,
    claim_size: int,
    lease: timedelta,
) -> Output[dict[str, Any]]:
    """Push every due record of each organisation, several at a time; fails at the end naming the failed ones."""
    runtime = RuntimeSettings.from_env()
    engine = batchly_db.engine
    orgs = sorted(set(organization_ids))
    tracker = _BatchProgress(context, len(orgs))
    run_prefix = f"run-{context.run.run_id[:8]}"

    abandoned: dict[int, list[PushAbandoned]] = {}  # attempts that lost their lease, by organisation

    def work(organization_id: int) -> PushStats | _Skipped:
        # a push that lost its lease is tried again at once (its lease may only have lapsed: a pause, the database
        # gone for a moment), not after the fleet's pause, which would hold the organisation in this run meanwhile
        for again in (False, True):
            with quickbooks.client_for(organization_id) as client:  # LookupError: not connected (any more)
                try:
                    return push_organization(
                        engine,
                        client,
                        organization_id,
                        worker=worker_name(run_prefix),
                        progress=tracker.progress(organization_id),
                        waiting=WaitAnnouncer(context.log.info, f"organisation {organization_id}"),
                        run_id=context.run.run_id,
                        claim_size=claim_size,
                        lease=lease,  # QuickBooks time: the push compresses it
                        lock_wait=timedelta(0),  # a busy realm is left for the next run, not waited for
                    )
                except PushAbandoned as exc:  # what it pushed counts, and so does why it stopped
                    abandoned.setdefault(organization_id, []).append(exc)
                    context.log.warning(f"organisation {organization_id}: {exc}")
                    if again:
                        raise
                except RealmBusy as exc:
                    if (
                        organization_id in abandoned
                    ):  # taken over while it ran: a failure of this run, not a skip
                        raise _TakenOver(f"{abandoned[organization_id][-1]}; then {exc}") from None
                    return _Skipped(str(exc))
        raise AssertionError("unreachable")

    def on_outcome(outcome: CompanyOutcome[PushStats | _Skipped]) -> None:
        result = outcome.result
        failed = outcome.failed or (isinstance(result, PushStats) and result.failed > 0)
        if outcome.failed:
            context.log.error(
                f"organisation {outcome.key} failed after {outcome.attempts} attempt(s): {outcome.error}"
            )
        elif isinstance(result, _Skipped):
            context.log.info(f"organisation {outcome.key} skipped, left for the next run: {result.reason}")
        tracker.finish(failed)

    outcomes = run_fleet(
        orgs,
        work,
        workers=runtime.company_workers,
        retry_delay_s=runtime.company_retry_s,
        # LookupError: no connection (any more); a retry cannot mend it, nor waiting here for a company another
        # push holds (the run would hold the organisation meanwhile: the sensor's next batch takes it once free)
        unmendable=(*UNMENDABLE, LookupError, _TakenOver),
        on_outcome=on_outcome,
    )
    # every attempt's work: one that lost its lease pushed records all the same
    attempts = {o.key: [o.result] for o in outcomes if isinstance(o.result, PushStats)}
    for org, lost in abandoned.items():
        attempts.setdefault(org, []).extend(exc.stats for exc in lost if exc.stats is not None)
    stats = {org: _summed(org, runs) for org, runs in attempts.items()}
    skipped = {o.key: o.result.reason for o in outcomes if isinstance(o.result, _Skipped)}
    record_pushed_batch(context, {org: s.actions for org, s in stats.items()})  # lineage
    failures = run_failures(engine, context.run.run_id)
    for failure in failures:
        context.log.error(tables.describe_failure(failure))
    failed_orgs = _failed_organizations(engine, outcomes, failures)
    actions: Counter[str] = Counter()
    for s in stats.values():
        actions.update(s.actions)
    done = sum(s.done for s in stats.values())
    failed_records = sum(s.failed for s in stats.values())
    summary: dict[str, Any] = {
        "organization_ids": orgs,
        "organizations": len(orgs),
        "pushed": sorted(org for org in stats if org not in {row["organization_id"] for row in failed_orgs}),
        "skipped": sorted(skipped),
        "failed": [row["organization_id"] for row in failed_orgs],
        "done": done,
        "actions": dict(sorted(actions.items())),
        "failed_records": failed_records,
        "dead": sum(s.dead for s in stats.values()),
        "api_calls": sum(int(s.api.get("calls_total", 0)) for s in stats.values()),
    }
    metadata: dict[str, Any] = {
        "organizations": len(orgs),
        "organizations_pushed": len(summary["pushed"]),
        "organizations_skipped": len(skipped),
        "organizations_failed": len(failed_orgs),
        "done": done,
        "failed": failed_records,
        "dead": summary["dead"],
        "actions": MetadataValue.json(summary["actions"]),
        "api_calls": summary["api_calls"],
        "throttled": sum(int(s.api.get("throttled", 0)) for s in stats.values()),
        **(
            {"skipped organizations": MetadataValue.json({str(k): v for k, v in skipped.items()})}
            if skipped
            else {}
        ),
        **({"failed organizations": tables.table(ORGANIZATION_COLUMNS, failed_orgs)} if failed_orgs else {}),
        **tables.failure_metadata(failures),
    }
    if failed_orgs:
        raise Failure(
            description=_describe(failed_orgs, failures, len(orgs)), metadata=metadata, allow_retries=False
        )
    return Output(summary, metadata=metadata)


class _TakenOver(PushAbandoned):
    """The organisation's push lost its lease and, tried again, found another push holding its company."""


def _summed(organization_id: int, runs: list[PushStats]) -> PushStats:
    """One organisation's attempts in this run as one (a single attempt as it is)."""
    if len(runs) == 1:
        return runs[0]
    total = PushStats(organization_id)
    for run in runs:
        total.done += run.done
        total.failed += run.failed
        total.dead += run.dead
        total.actions.update(run.actions)
        total.errors += run.errors
        total.api = {
            key: total.api.get(key, 0) + value
            for key, value in run.api.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
    return total


def _failed_organizations(
    engine: Any,
    outcomes: list[CompanyOutcome[PushStats | _Skipped]],
    failures: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """One row per failed organisation: its id, name, failed records and the reason."""
    records: dict[int, list[dict[str, Any]]] = {}
    for failure in failures:
        records.setdefault(int(failure["organization_id"]), []).append(failure)
    rows: list[dict[str, Any]] = []
    for outcome in outcomes:
        own = records.get(outcome.key, [])
        if outcome.failed:
            reason = outcome.error or ""
        elif own:  # records whose last outcome in this run is a failure (one retried and pushed is not)
            reason = f"{len(own)} record(s) failed: " + "; ".join(f["message"] for f in own[:SHOWN_RECORDS])
        else:
            continue
        named = [
            f"{f['entity_type']} {f['entity_id']}" + (f" ({f['name']})" if f.get("name") else "")
            for f in own[:SHOWN_RECORDS]
        ]
        more = f" and {len(own) - SHOWN_RECORDS} more" if len(own) > SHOWN_RECORDS else ""
        rows.append(
            {
                "organization_id": int(outcome.key),
                "records": ", ".join(named) + more,
                "reason": reason,
                "attempts": outcome.attempts,
            }
        )
    names = organization_names(engine, [int(row["organization_id"]) for row in rows]) if rows else {}
    for row in rows:
        row["organization"] = names.get(int(row["organization_id"]), "")
    return rows


def _describe(failed: list[dict[str, Any]], failures: list[dict[str, Any]], organizations: int) -> str:
    """The run's failure in words: which organisations failed and why, then the first failed records."""
    listed = "; ".join(
        f"organisation {row['organization_id']} ({row['organization']}): {row['reason']}"
        for row in failed[:DESCRIBED]
    )
    more = f"; and {len(failed) - DESCRIBED} more" if len(failed) > DESCRIBED else ""
    others = ", every other organisation's push went on" if organizations > len(failed) else ""
    parts = [
        f"{len(failed)} of {organizations} organisation(s) failed{others}: {listed}{more}. See the 'failed "
        "organizations' table."
    ]
    if failures:
        parts.append(tables.describe_failures(failures))
    return "\n".join(parts)
