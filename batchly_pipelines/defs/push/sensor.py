"""``sync_queue_sensor``: one ``push_to_quickbooks`` run per organisation with due work in the sync queue.

Each tick runs one indexed query over the queue (due rows per organisation) and, only when something is due, looks
up the organisations' realms. It never calls QuickBooks. An organisation that already has a push run queued or in
progress is left alone (that run keeps claiming until nothing is due); otherwise a run is requested, tagged with the
realm so ``dagster.yaml``'s run-tag limit keeps one push run per QuickBooks company. The cursor counts requests per
organisation, which makes every run key unique and traceable (``push-org<id>-upto<max due id>-<n>``).

Every tick first fails the push runs whose process is gone (:mod:`.dead_runs`): the default run launcher cannot
notice them, and a dead ``STARTED`` run would hold its company's run slot until an operator terminated it.
"""

import json

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from batchly_pipelines.defs.push.dead_runs import fail_dead_push_runs
from batchly_pipelines.defs.push.job import push_to_quickbooks
from batchly_pipelines.defs.push.tags import ORGANIZATION_TAG, REALM_TAG
from batchly_pipelines.defs.resources import BatchlyDatabase
from batchly_pipelines.defs.runs import ACTIVE_STATUSES
from batchly_pipelines.store.organizations import connected_realms

__all__ = ["ORGANIZATION_TAG", "REALM_TAG", "push_run_request", "sync_queue_sensor"]

INTERVAL_SECONDS = 5


def push_run_request(organization_id: int, realm_id: str, run_key: str) -> RunRequest:
    """A ``push_to_quickbooks`` run for one organisation, tagged with its realm."""
    return RunRequest(
        run_key=run_key,
        run_config={"ops": {"push_records": {"config": {"organization_id": organization_id}}}},
        tags={REALM_TAG: realm_id, ORGANIZATION_TAG: str(organization_id)},
    )


@sensor(
    job=push_to_quickbooks,
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Starts a push run for every organisation with due records in the sync queue (no QuickBooks calls).",
)
def sync_queue_sensor(
    context: SensorEvaluationContext, batchly_db: BatchlyDatabase
) -> SensorResult | SkipReason:
    runs = context.instance.get_runs(
        filters=RunsFilter(job_name=push_to_quickbooks.name, statuses=ACTIVE_STATUSES)
    )
    dead = fail_dead_push_runs(context.instance, batchly_db.engine, runs)
    for message in dead.values():
        context.log.warning(message)
    due = batchly_db.queue.due_by_organization()
    if not due:
        return SkipReason("nothing due in the sync queue")
    realms = connected_realms(batchly_db.engine, due)
    active = {run.tags.get(ORGANIZATION_TAG) for run in runs if run.run_id not in dead}
    requested: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
    requests = []
    for organization_id, (count, max_id) in sorted(due.items()):
        realm_id = realms.get(organization_id)
        if realm_id is None:
            context.log.info(f"organisation {organization_id}: {count} due, but not connected to QuickBooks")
            continue
        if str(organization_id) in active:
            continue
        generation = requested.get(str(organization_id), 0) + 1
        requested[str(organization_id)] = generation
        run_key = f"push-org{organization_id}-upto{max_id}-{generation}"
        requests.append(push_run_request(organization_id, realm_id, run_key))
    if not requests:
        return SkipReason("every organisation with due work is either not connected or already being pushed")
    return SensorResult(run_requests=requests, cursor=json.dumps(requested, sort_keys=True))
