"""``webhook_inbox_sensor``: one ``pull_webhook_changes`` run per QuickBooks company with pending webhook events or a
CDC sweep due; ``webhook_checks_sensor``: records the ``webhooks_flowing`` and ``read_budget`` checks.

Each tick of the inbox sensor runs a few indexed queries (pending events per realm an organisation is connected to;
the realms whose sweep is due: never swept, swept more than ``BATCHLY_WEBHOOK_REPAIR_MINUTES`` ago — 15 by default —
or a receiver started since) and never calls QuickBooks. A realm's run drains its events and, when due, sweeps it. A
realm with a run queued or in progress is left alone: whatever arrives meanwhile waits for the next run, which takes
in everything pending when it starts — so a burst of events costs a few runs, not one per event. After a failed run
the realm waits ``RETRY_AFTER_SECONDS`` before another is requested. Runs are tagged with the realm
(``batchly/webhook-realm``); the cursor counts requests per realm, which keeps run keys unique
(``webhooks-<realm>-upto<newest event id>-<n>``, or ``webhooks-<realm>-sweep-<n>`` for a sweep alone).
"""

import json
import time

from dagster import (
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
from batchly_pipelines.defs.webhooks.config import repair_every
from batchly_pipelines.defs.webhooks.jobs import WEBHOOK_REALM_TAG, pull_webhook_changes
from batchly_pipelines.services.webhooks.repair import sweeps_due
from batchly_pipelines.store.inbox import pending_by_realm

INTERVAL_SECONDS = 5
RETRY_AFTER_SECONDS = 60.0


def webhook_run_request(realm_id: str, run_key: str, sweep: bool = False) -> RunRequest:
    """A ``pull_webhook_changes`` run for one realm, tagged with it; ``sweep``: a CDC sweep after the drain."""
    return RunRequest(
        run_key=run_key,
        run_config={"ops": {"pull_notified_changes": {"config": {"realm_id": realm_id, "sweep": sweep}}}},
        tags={WEBHOOK_REALM_TAG: realm_id},
    )


@sensor(
    job=pull_webhook_changes,
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Starts one targeted pull per QuickBooks company with pending webhook events or a CDC sweep due "
        "(no QuickBooks calls)."
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
    requested: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
    requests = []
    for realm_id in sorted(set(pending) | set(due)):
        if realm_id in active or _failed_recently(context, realm_id):
            continue
        generation = requested.get(realm_id, 0) + 1
        requested[realm_id] = generation
        if realm_id in pending:
            count, newest = pending[realm_id]
            context.log.info(f"realm {realm_id}: {count} pending webhook event(s)")
            run_key = f"webhooks-{realm_id}-upto{newest}-{generation}"
        else:
            run_key = f"webhooks-{realm_id}-sweep-{generation}"
        if realm_id in due:
            context.log.info(f"realm {realm_id}: CDC sweep due ({due[realm_id]})")
        requests.append(webhook_run_request(realm_id, run_key, sweep=realm_id in due))
    if not requests:
        return SkipReason(
            "every realm with pending events or a sweep due has a pull running, or failed less than a minute ago"
        )
    return SensorResult(run_requests=requests, cursor=json.dumps(requested, sort_keys=True))


def _failed_recently(context: SensorEvaluationContext, realm_id: str) -> bool:
    """Whether the realm's latest run failed less than ``RETRY_AFTER_SECONDS`` ago."""
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
