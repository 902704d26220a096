"""``webhook_inbox_sensor``: one ``pull_webhook_changes`` run per QuickBooks company with pending webhook events.

Each tick runs one indexed query over the inbox (pending events per realm that an organisation is connected to) and
never calls QuickBooks. A realm with a run queued or in progress is left alone: whatever arrives meanwhile waits for
the next run, which takes in everything pending when it starts — so a burst of events costs a few runs, not one per
event. After a failed run the realm waits ``RETRY_AFTER_SECONDS`` before another is requested. Runs are tagged with
the realm (``batchly/webhook-realm``); the cursor counts requests per realm, which keeps run keys unique
(``webhooks-<realm>-upto<newest event id>-<n>``).
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
from batchly_pipelines.defs.webhooks.jobs import WEBHOOK_REALM_TAG, pull_webhook_changes
from batchly_pipelines.store.inbox import pending_by_realm

INTERVAL_SECONDS = 5
RETRY_AFTER_SECONDS = 60.0


def webhook_run_request(realm_id: str, run_key: str) -> RunRequest:
    """A ``pull_webhook_changes`` run for one realm, tagged with it."""
    return RunRequest(
        run_key=run_key,
        run_config={"ops": {"pull_notified_changes": {"config": {"realm_id": realm_id}}}},
        tags={WEBHOOK_REALM_TAG: realm_id},
    )


@sensor(
    job=pull_webhook_changes,
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Starts one targeted pull per QuickBooks company with pending webhook events (no QuickBooks calls).",
)
def webhook_inbox_sensor(
    context: SensorEvaluationContext, batchly_db: BatchlyDatabase
) -> SensorResult | SkipReason:
    pending = pending_by_realm(batchly_db.engine)
    if not pending:
        return SkipReason("no pending webhook events")
    active = {
        run.tags.get(WEBHOOK_REALM_TAG)
        for run in context.instance.get_runs(
            filters=RunsFilter(job_name=pull_webhook_changes.name, statuses=ACTIVE_STATUSES)
        )
    }
    requested: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
    requests = []
    for realm_id, (count, newest) in sorted(pending.items()):
        if realm_id in active or _failed_recently(context, realm_id):
            continue
        generation = requested.get(realm_id, 0) + 1
        requested[realm_id] = generation
        context.log.info(f"realm {realm_id}: {count} pending webhook event(s)")
        requests.append(webhook_run_request(realm_id, f"webhooks-{realm_id}-upto{newest}-{generation}"))
    if not requests:
        return SkipReason(
            "every realm with pending events has a pull running, or failed less than a minute ago"
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
