"""``webhook_inbox_sensor``: one ``pull_webhook_changes`` run per QuickBooks company with pending webhook events, and
the CDC sweeps due of the other companies in a few ``sweep_webhook_realms`` runs of up to
``BATCHLY_WEBHOOK_SWEEP_BATCH`` (250) realms each; ``webhook_checks_sensor``: records the ``webhooks_flowing`` and
``read_budget`` checks.

Each tick of the inbox sensor runs a few indexed queries (pending events per realm an organisation is connected to;
the realms whose sweep is due: never swept, swept more than ``BATCHLY_WEBHOOK_REPAIR_MINUTES`` ago — 15 by default —
or a receiver started since) and never calls QuickBooks.

- A realm with pending events gets its own run, which drains them and, when its sweep is due and no sweep run has
  the realm, sweeps it too. A realm with a pull run queued or in progress is left alone: whatever arrives meanwhile
  waits for the next run, which takes in everything pending when it starts — so a burst of events costs a few runs,
  not one per event. After a failed pull run the realm waits ``RETRY_AFTER_SECONDS`` before another is requested.
- The realms with nothing pending whose sweep is due are swept many to a run: at a thousand realms every 15 minutes
  that is four runs, not a thousand. A realm in a sweep run queued or in progress is not requested again (events
  that arrive for it meanwhile get a pull run that drains them and leaves the sweep to the sweep run); the realms of
  a sweep run that failed less than ``RETRY_AFTER_SECONDS`` ago wait that long — only they: the others that run swept
  are no longer due, and every other realm's sweep goes ahead.

Pull runs are tagged with the realm (``batchly/webhook-realm``), sweep runs with how many realms they sweep
(``batchly/webhook-sweep``; the realms are in their run config). The cursor counts requests per realm, and sweep
rounds under ``sweeps``, which keeps run keys unique (``webhooks-<realm>-upto<newest event id>-<n>``,
``webhook-sweeps-<round>-<batch>``).
"""

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from dagster import (
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from batchly_pipelines.defs.resources import BatchlyDatabase
from batchly_pipelines.defs.runs import ACTIVE_STATUSES
from batchly_pipelines.defs.webhooks.checks import WEBHOOK_VERDICTS
from batchly_pipelines.defs.webhooks.config import repair_every, sweep_batch
from batchly_pipelines.defs.webhooks.jobs import (
    WEBHOOK_REALM_TAG,
    WEBHOOK_SWEEP_TAG,
    pull_webhook_changes,
    sweep_webhook_realms,
)
from batchly_pipelines.services.webhooks.repair import sweeps_due
from batchly_pipelines.store.inbox import pending_by_realm

INTERVAL_SECONDS = 5
RETRY_AFTER_SECONDS = 60.0
SWEEPS_CURSOR_KEY = "sweeps"  # the cursor's count of sweep rounds (realm ids are digits)


def webhook_run_request(realm_id: str, run_key: str, sweep: bool = False) -> RunRequest:
    """A ``pull_webhook_changes`` run for one realm, tagged with it; ``sweep``: a CDC sweep after the drain."""
    return RunRequest(
        run_key=run_key,
        run_config={"ops": {"pull_notified_changes": {"config": {"realm_id": realm_id, "sweep": sweep}}}},
        tags={WEBHOOK_REALM_TAG: realm_id},
        job_name=pull_webhook_changes.name,
    )


def sweep_run_request(realm_ids: list[str], run_key: str) -> RunRequest:
    """A ``sweep_webhook_realms`` run for many realms, tagged with how many."""
    return RunRequest(
        run_key=run_key,
        run_config={"ops": {"sweep_cdc_realms": {"config": {"realm_ids": realm_ids}}}},
        tags={WEBHOOK_SWEEP_TAG: str(len(realm_ids))},
        job_name=sweep_webhook_realms.name,
    )


@sensor(
    jobs=[pull_webhook_changes, sweep_webhook_realms],
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Starts one targeted pull per QuickBooks company with pending webhook events, and the CDC sweeps due of "
        "the other companies in runs of up to BATCHLY_WEBHOOK_SWEEP_BATCH (250) companies (no QuickBooks calls)."
    ),
)
def webhook_inbox_sensor(
    context: SensorEvaluationContext, batchly_db: BatchlyDatabase
) -> SensorResult | SkipReason:
    pending = pending_by_realm(batchly_db.engine)
    due = sweeps_due(batchly_db.engine, repair_every())
    if not pending and not due:
        return SkipReason("no pending webhook events, no CDC sweep due")
    active = {
        run.tags.get(WEBHOOK_REALM_TAG)
        for run in context.instance.get_runs(
            filters=RunsFilter(job_name=pull_webhook_changes.name, statuses=ACTIVE_STATUSES)
        )
    }
    sweeping = _realms_of_sweep_runs(context, ACTIVE_STATUSES)
    waiting = _realms_of_sweep_runs(
        context,
        [DagsterRunStatus.FAILURE],
        updated_after=datetime.now(UTC) - timedelta(seconds=RETRY_AFTER_SECONDS),
    )
    requested: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
    requests = []
    for realm_id in sorted(pending):
        if realm_id in active or _failed_recently(context, realm_id):
            continue
        generation = requested.get(realm_id, 0) + 1
        requested[realm_id] = generation
        count, newest = pending[realm_id]
        context.log.info(f"realm {realm_id}: {count} pending webhook event(s)")
        sweep = realm_id in due and realm_id not in sweeping and realm_id not in waiting
        if sweep:
            context.log.info(f"realm {realm_id}: CDC sweep due ({due[realm_id]})")
        run_key = f"webhooks-{realm_id}-upto{newest}-{generation}"
        requests.append(webhook_run_request(realm_id, run_key, sweep=sweep))
    # the realms with nothing pending whose sweep is due: a few runs of up to sweep_batch() realms, not one each
    to_sweep = [
        realm_id
        for realm_id in sorted(due)
        if realm_id not in pending and realm_id not in active and realm_id not in sweeping | waiting
    ]
    if to_sweep:
        size = sweep_batch()
        generation = requested.get(SWEEPS_CURSOR_KEY, 0) + 1
        requested[SWEEPS_CURSOR_KEY] = generation
        context.log.info(f"{len(to_sweep)} realm(s) with a CDC sweep due, in runs of up to {size}")
        for index, start in enumerate(range(0, len(to_sweep), size)):
            requests.append(
                sweep_run_request(to_sweep[start : start + size], f"webhook-sweeps-{generation}-{index}")
            )
    if not requests:
        return SkipReason(
            "every realm with pending events or a sweep due has a run queued or in progress, or its last run "
            "failed less than a minute ago"
        )
    return SensorResult(run_requests=requests, cursor=json.dumps(requested, sort_keys=True))


def sweep_run_realms(run: DagsterRun) -> list[str]:
    """The realms a ``sweep_webhook_realms`` run sweeps (its run config)."""
    value: object = run.run_config
    for key in ("ops", "sweep_cdc_realms", "config", "realm_ids"):
        value = value.get(key) if isinstance(value, Mapping) else None
    return [str(realm_id) for realm_id in value] if isinstance(value, list | tuple) else []


def _realms_of_sweep_runs(
    context: SensorEvaluationContext,
    statuses: list[DagsterRunStatus],
    updated_after: datetime | None = None,
) -> set[str]:
    """The realms of every ``sweep_webhook_realms`` run in ``statuses`` (updated after ``updated_after``)."""
    runs = context.instance.get_runs(
        filters=RunsFilter(job_name=sweep_webhook_realms.name, statuses=statuses, updated_after=updated_after)
    )
    return {realm_id for run in runs for realm_id in sweep_run_realms(run)}


def _failed_recently(context: SensorEvaluationContext, realm_id: str) -> bool:
    """Whether the realm's latest pull run failed less than ``RETRY_AFTER_SECONDS`` ago."""
    records = context.instance.get_run_records(
        filters=RunsFilter(job_name=pull_webhook_changes.name, tags={WEBHOOK_REALM_TAG: realm_id}), limit=1
    )
    if not records or records[0].dagster_run.status != DagsterRunStatus.FAILURE:
        return False
    ended = records[0].end_time or records[0].update_timestamp.timestamp()
    return time.time() - ended < RETRY_AFTER_SECONDS


CHECKS_INTERVAL_SECONDS = 60
CHECKS_RECORD_EVERY_SECONDS = 300


@sensor(
    minimum_interval_seconds=CHECKS_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Records the webhooks_flowing and read_budget checks of sync_status when their outcome changes and at "
        "least every 5 minutes (a few queries, no run, no QuickBooks call)."
    ),
)
def webhook_checks_sensor(
    context: SensorEvaluationContext, batchly_db: BatchlyDatabase
) -> SensorResult | SkipReason:
    last: dict[str, object] = json.loads(context.cursor) if context.cursor else {}
    verdicts = {name: verdict(batchly_db) for name, verdict in WEBHOOK_VERDICTS.items()}
    outcome = {name: [verdict.passed, verdict.severity.value] for name, verdict in verdicts.items()}
    now = time.time()
    recorded_at = last.get("recorded_at")
    fresh = isinstance(recorded_at, int | float) and now - recorded_at < CHECKS_RECORD_EVERY_SECONDS
    if fresh and last.get("outcome") == outcome:
        return SkipReason("the webhook checks' outcome has not changed since they were last recorded")
    return SensorResult(
        asset_events=[verdict.evaluation(name) for name, verdict in verdicts.items()],
        cursor=json.dumps({"recorded_at": now, "outcome": outcome}),
    )
