"""Push runs whose process is gone, found and failed by ``sync_queue_sensor`` so that none holds its company.

Under ``dagster dev``'s default run launcher Dagster cannot check a run worker's health: a killed push run would stay
``STARTED``, and keep the company's run slot (run tag ``batchly/realm``, one per company), until someone terminates
it. A ``STARTED`` push run is dead when

- the company's push lock (``qbo_push_locks``) names the run (``run-<first 8 characters of the run id>-…``) and its
  lease has run out: a live push renews it every third of a lease; or
- with the default run launcher, which starts run workers on the code server's machine, the run worker's process
  (its pid is in the run's "Started process for run" event) no longer exists, or is a zombie — also when the lock
  was taken over since, or never taken.

A batched run (many organisations, no realm tag) is found dead by its process alone (its organisations' locks lapse
with their leases and are taken over by the next batch; run monitoring fails it under other run launchers).

A run holding a live lock is alive whatever its pid says (its step process still pushes). A dead run is marked
failed with a message that says why, its op concurrency slots are given back, and the sensor requests the company's
next push; its claimed rows return to the queue when their leases lapse.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, DefaultRunLauncher

from batchly_pipelines.defs.push.tags import BATCH_TAG, ORGANIZATION_TAG, REALM_TAG
from batchly_pipelines.store import push_locks
from batchly_pipelines.store.db import Engine

RUN_WORKER_STARTED = ("Started process for run", "Started process for resuming job")


def why_dead(instance: DagsterInstance, engine: Engine, run: DagsterRun) -> str | None:
    """Why a ``STARTED`` push run is dead (a sentence), or ``None`` while it may be alive."""
    if run.status != DagsterRunStatus.STARTED:
        return None
    realm_id = run.tags.get(REALM_TAG)
    if realm_id:
        lock = push_locks.holder_and_live(engine, realm_id)
        if lock is not None and lock[0].owner.startswith(f"run-{run.run_id[:8]}-"):
            holder, live = lock
            if live:
                return None
            return (
                f"it stopped renewing the push lock of QuickBooks company {realm_id}, which lapsed at "
                f"{holder.expires_at:%Y-%m-%d %H:%M:%S} UTC: its process is gone"
            )
    if isinstance(instance.run_launcher, DefaultRunLauncher):
        pid = _run_worker_pid(instance, run)
        if pid is not None and _process_gone(pid):
            return f"its run worker (process {pid}) is gone"
    return None


def fail_dead_push_runs(
    instance: DagsterInstance, engine: Engine, runs: Iterable[DagsterRun]
) -> dict[str, str]:
    """Mark every dead push run among ``runs`` failed; returns ``{run id: message}`` of those failed."""
    failed = {}
    for run in runs:
        reason = why_dead(instance, engine, run)
        if reason is None:
            continue
        if ORGANIZATION_TAG in run.tags:
            whose = f"of organisation {run.tags[ORGANIZATION_TAG]}"
        else:
            whose = f"of a batch of {run.tags.get(BATCH_TAG, '?')} organisations"
        message = (
            f"push run {run.run_id[:8]} {whose} is dead: {reason}. Marked failed by sync_queue_sensor so that "
            "the next push can start; the records it had claimed return to the queue when their leases lapse."
        )
        instance.report_run_failed(run, message)
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        failed[run.run_id] = message
    return failed


def _run_worker_pid(instance: DagsterInstance, run: DagsterRun) -> int | None:
    """The pid of the run's latest run worker, from the engine event it logs when it starts."""
    pid = None
    for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        if event is None or not (event.message or "").startswith(RUN_WORKER_STARTED):
            continue
        value = getattr(event.event_specific_data, "metadata", {}).get("pid")
        text = getattr(value, "value", None)
        if isinstance(text, str) and text.isdigit():
            pid = int(text)
    return pid


def _process_gone(pid: int) -> bool:
    """Whether no process ``pid`` runs on this machine (a zombie — killed, not yet reaped — counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it exists, under another user
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False  # no /proc (not Linux): existing is all we know
    return state in ("Z", "X")
