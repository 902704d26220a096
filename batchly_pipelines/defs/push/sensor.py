"""``sync_queue_sensor``: batched ``push_to_quickbooks`` runs for the organisations with due work in the sync queue.

Each tick runs one indexed query over the queue (due rows per organisation) and, only when something is due, looks
up the organisations' realms. It never calls QuickBooks. An organisation that already has a push run queued or in
progress — a batch naming it in its config, or its own "Sync to QuickBooks now" run — is left alone (that run pushes
what it claims; the next batch takes the rest); the others are put in batches of up to ``BATCHLY_NIGHTLY_BATCH``
organisations, a run each (config ``organization_ids``; :mod:`.batch`), not a run — a process — per organisation.
A batch of one organisation is tagged with its realm and organisation, as a "Sync now" run is, so ``dagster.yaml``'s
run-tag limit keeps it apart from another run of that realm; a larger batch cannot carry every realm as a tag, and
needs none: one push per QuickBooks company is the realm's push lock (``store/push_locks.py``), taken by each
organisation's push in every process, and an organisation whose realm is busy is left for the next batch. The cursor
counts the batches requested, which makes every run key unique and traceable
(``push-batch<n>-org<first id>-<organisations>-upto<max due id>``).

Every tick first fails the push runs whose process is gone (:mod:`.dead_runs`): the default run launcher cannot
notice them, and a dead ``STARTED`` run would hold its organisations until an operator terminated it.
"""

import json
from collections.abc import Iterable
from typing import Any

from dagster import (
    DagsterRun,
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
from batchly_pipelines.defs.push.tags import BATCH_TAG, ORGANIZATION_TAG, REALM_TAG
from batchly_pipelines.defs.resources import BatchlyDatabase
from batchly_pipelines.defs.runs import ACTIVE_STATUSES
from batchly_pipelines.settings import RuntimeSettings
from batchly_pipelines.store.organizations import connected_realms

__all__ = [
    "BATCH_TAG",
    "ORGANIZATION_TAG",
    "REALM_TAG",
    "push_batch_request",
    "push_run_request",
    "sync_queue_sensor",
]

INTERVAL_SECONDS = 5


def push_run_request(organization_id: int, realm_id: str, run_key: str) -> RunRequest:
    """A ``push_to_quickbooks`` run for one organisation's due work, tagged with its realm."""
    return push_batch_request({organization_id: realm_id}, run_key)


def push_batch_request(realms: dict[int, str], run_key: str) -> RunRequest:
    """A ``push_to_quickbooks`` run for the due work of the organisations of ``realms`` (organisation → realm)."""
    orgs = sorted(realms)
    tags = {BATCH_TAG: str(len(orgs))}
    if len(orgs) == 1:  # one company: the run-tag limit per realm applies as to a "Sync now" run
        tags |= {REALM_TAG: realms[orgs[0]], ORGANIZATION_TAG: str(orgs[0])}
    return RunRequest(
        run_key=run_key,
        run_config={"ops": {"push_records": {"config": {"organization_ids": orgs}}}},
        tags=tags,
    )


def run_organizations(run: DagsterRun) -> set[int]:
    """The organisations a push run works on: its batch (run config) or its one organisation (tag or config)."""
    run_config: dict[str, Any] = dict(run.run_config or {})
    ops: dict[str, Any] = run_config.get("ops") or {}
    config: dict[str, Any] = (ops.get("push_records") or {}).get("config") or {}
    orgs = {int(org) for org in config.get("organization_ids") or []}
    if config.get("organization_id"):
        orgs.add(int(config["organization_id"]))
    tag = run.tags.get(ORGANIZATION_TAG)
    if tag and tag.isdigit():
        orgs.add(int(tag))
    return orgs


def _batches(orgs: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(orgs), size):
        yield orgs[start : start + size]


@sensor(
    job=push_to_quickbooks,
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Starts batched push runs for the organisations with due records in the sync queue "
        "(BATCHLY_NIGHTLY_BATCH organisations a run; no QuickBooks calls)."
    ),
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
    active: set[int] = set()
    for run in runs:
        if run.run_id not in dead:
            active |= run_organizations(run)
    ready = []
    for organization_id, (count, _) in sorted(due.items()):
        if organization_id not in realms:
            context.log.info(f"organisation {organization_id}: {count} due, but not connected to QuickBooks")
        elif organization_id not in active:
            ready.append(organization_id)
    if not ready:
        return SkipReason("every organisation with due work is either not connected or already being pushed")
    cursor = json.loads(context.cursor) if context.cursor else {}
    generation = int(cursor.get("batches", 0)) if isinstance(cursor, dict) else 0
    requests = []
    for batch in _batches(ready, RuntimeSettings.from_env().nightly_batch):
        generation += 1
        upto = max(due[org][1] for org in batch)
        run_key = f"push-batch{generation}-org{batch[0]}-{len(batch)}-upto{upto}"
        requests.append(push_batch_request({org: realms[org] for org in batch}, run_key))
    return SensorResult(run_requests=requests, cursor=json.dumps({"batches": generation}))
