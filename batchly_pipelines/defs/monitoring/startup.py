"""What ``make dev`` records into ``DAGSTER_HOME`` before the UI starts, so it opens on the truth instead of
"Missing" and "Never materialized": the company partitions of every connected organisation, one run of each pull job
per company (the set-up's pulls, through Dagster: partitions, metadata and checks as a scheduled pull leaves them),
then ``sync_status`` with its checks. The pushes need nothing here: ``sync_queue_sensor`` starts them as runs within
seconds of the UI starting.

Run as ``python -m batchly_pipelines.defs.monitoring.startup`` (``batchly-sync dev`` does, with ``DAGSTER_HOME``
set); it prints one line per run and exits 1 if one failed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from dagster import DagsterInstance, Definitions
from dagster.components import load_from_defs_folder

from batchly_pipelines.defs import ignore_dagster_false_alarms
from batchly_pipelines.defs.monitoring.assets import sync_status_job
from batchly_pipelines.defs.partitions import COMPANY, company_key, keys_by_organization
from batchly_pipelines.defs.pull.jobs import pull_customers_job, pull_items_job, pull_payments_job
from batchly_pipelines.defs.resources import BatchlyDatabase
from batchly_pipelines.store.organizations import organizations_with_connection

PULLS = (pull_customers_job.name, pull_items_job.name, pull_payments_job.name)


def company_keys(instance: DagsterInstance, database: BatchlyDatabase) -> list[str]:
    """The company partition of every connected organisation, added where missing (as
    ``company_partitions_sensor`` would on its first tick; a known organisation keeps its key)."""
    known = keys_by_organization(instance.get_dynamic_partitions(COMPANY))
    wanted = dict(organizations_with_connection(database.engine))
    added = [company_key(org, wanted[org]) for org in sorted(wanted.keys() - known.keys())]
    if added:
        instance.add_dynamic_partitions(COMPANY, added)
    return [known.get(org) or company_key(org, wanted[org]) for org in sorted(wanted)]


def record_setup(defs: Definitions, instance: DagsterInstance) -> list[str]:
    """Run each pull job for every company, then refresh ``sync_status``; a line per run, failures included."""
    lines = []
    for key in company_keys(instance, BatchlyDatabase()):
        for name in PULLS:
            started = time.monotonic()
            result = defs.resolve_job_def(name).execute_in_process(
                instance=instance, partition_key=key, raise_on_error=False
            )
            outcome = "pulled" if result.success else "FAILED (see the run in the UI)"
            lines.append(f"{name} {key}: {outcome} ({time.monotonic() - started:.1f}s)")
    result = defs.resolve_job_def(sync_status_job.name).execute_in_process(
        instance=instance, raise_on_error=False
    )
    lines.append(f"sync_status: {'recorded with its checks' if result.success else 'FAILED'}")
    return lines


def main() -> int:
    ignore_dagster_false_alarms()
    defs = load_from_defs_folder(path_within_project=Path(__file__).resolve().parents[1])
    with DagsterInstance.get() as instance:
        lines = record_setup(defs, instance)
    for line in lines:
        print(line)
    return 1 if any("FAILED" in line for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
