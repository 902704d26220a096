"""Nightly pulls for every company: ``payments_nightly`` 02:00, ``customers_nightly`` 03:00, ``items_nightly`` 04:00.

Each tick asks for one run per company of the last complete day. The time zone is ``BATCHLY_SCHEDULE_TIMEZONE``
(default UTC), read when the code location loads. RUNNING by default, so a fresh install pulls without clicks.
"""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from batchly_pipelines.defs.partitions import COMPANY, RUNTIME, daily_partitions, pull_key
from batchly_pipelines.defs.pull.jobs import pull_customers_job, pull_items_job, pull_payments_job

SCHEDULE_TIMEZONE = RUNTIME.schedule_timezone


def last_complete_day(moment: datetime) -> str:
    """The daily partition key of the day before ``moment`` in the partitions' time zone."""
    local = moment.astimezone(ZoneInfo(daily_partitions.timezone))
    return (local.date() - timedelta(days=1)).isoformat()


def nightly(name: str, job_name: str, hour: int) -> ScheduleDefinition:
    """A schedule at ``hour``:00 running job ``job_name`` for the last complete day of every company partition."""

    @schedule(
        name=name,
        job_name=job_name,
        cron_schedule=f"0 {hour} * * *",
        execution_timezone=SCHEDULE_TIMEZONE,
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"{job_name} for every company, for the last complete day, at {hour:02d}:00 {SCHEDULE_TIMEZONE}.",
    )
    def _nightly(context: ScheduleEvaluationContext) -> list[RunRequest] | SkipReason:
        companies = context.instance.get_dynamic_partitions(COMPANY)
        day = last_complete_day(context.scheduled_execution_time)
        if not companies:
            return SkipReason("no company connected to QuickBooks yet")
        return [
            RunRequest(
                run_key=f"{name}:{company}:{day}",
                partition_key=pull_key(int(company), day),
                tags={"batchly/organization": company},
            )
            for company in sorted(companies, key=int)
        ]

    return _nightly


payments_nightly = nightly("payments_nightly", pull_payments_job.name, 2)
customers_nightly = nightly("customers_nightly", pull_customers_job.name, 3)
items_nightly = nightly("items_nightly", pull_items_job.name, 4)
