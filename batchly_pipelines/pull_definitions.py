"""The pull area's Dagster definitions (no resources): partitioned mirror and reconciled assets with QuickBooks as
external lineage, their checks, the company partition sensor, the nightly schedules and ``resolve_conflicts``."""

from dagster import Definitions

from batchly_pipelines.assets.pull import EXTERNAL_SPECS, PULL_ASSETS
from batchly_pipelines.assets.pull_checks import PULL_CHECKS
from batchly_pipelines.jobs.conflicts import resolve_conflicts_job
from batchly_pipelines.partitions import company_partitions_sensor
from batchly_pipelines.pull_schedules import PULL_JOBS, PULL_SCHEDULES

defs = Definitions(
    assets=[*EXTERNAL_SPECS, *PULL_ASSETS],
    asset_checks=PULL_CHECKS,
    jobs=[*PULL_JOBS, resolve_conflicts_job],
    schedules=PULL_SCHEDULES,
    sensors=[company_partitions_sensor],
)
