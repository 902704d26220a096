"""Nightly pulls for every company: ``payments_nightly`` 02:00, ``customers_nightly`` 03:00, ``items_nightly`` 04:00.

Each tick asks for one run per batch of ``BATCHLY_NIGHTLY_BATCH`` companies (default 250; a range of company
partitions, in the order the company sensor added them), not one run per company: a thousand companies are four
runs per job and night. Each company is pulled from where its last pull ended, so a night that failed for a company
is caught up by the next one. The time zone is ``BATCHLY_SCHEDULE_TIMEZONE`` (default UTC), read when the code
location loads. RUNNING by default, so a fresh install pulls without clicks.
"""

from collections.abc import Sequence

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from batchly_pipelines.defs.partitions import COMPANY, RANGE_END, RANGE_START, RUNTIME
from batchly_pipelines.defs.pull.jobs import pull_customers_job, pull_items_job, pull_payments_job

SCHEDULE_TIMEZONE = RUNTIME.schedule_timezone
NIGHT_TAG = "batchly/night"


def company_batches(companies: Sequence[str], size: int) -> list[Sequence[str]]:
    """``companies`` cut into consecutive batches of at most ``size``."""
    return [companies[start : start + size] for start in range(0, len(companies), size)]


def nightly(name: str, job_name: str, hour: int) -> ScheduleDefinition:
    """A schedule at ``hour``:00 running job ``job_name`` for every company partition, a batch per run."""

    @schedule(
        name=name,
        job_name=job_name,
        cron_schedule=f"0 {hour} * * *",
        execution_timezone=SCHEDULE_TIMEZONE,
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"{job_name} for every company (a run per {RUNTIME.nightly_batch} companies), each from where "
        f"its last pull ended, at {hour:02d}:00 {SCHEDULE_TIMEZONE}.",
    )
    def _nightly(context: ScheduleEvaluationContext) -> list[RunRequest] | SkipReason:
        companies = context.instance.get_dynamic_partitions(COMPANY)
        if not companies:
            return SkipReason("no company connected to QuickBooks yet")
        night = context.scheduled_execution_time.date().isoformat()
        return [
            RunRequest(
                run_key=f"{name}:{night}:{batch[0]}",
                tags={
                    RANGE_START: batch[0],
                    RANGE_END: batch[-1],
                    NIGHT_TAG: night,
                    "batchly/companies": str(len(batch)),
                },
            )
            for batch in company_batches(companies, RUNTIME.nightly_batch)
        ]

    return _nightly


payments_nightly = nightly("payments_nightly", pull_payments_job.name, 2)
customers_nightly = nightly("customers_nightly", pull_customers_job.name, 3)
items_nightly = nightly("items_nightly", pull_items_job.name, 4)
