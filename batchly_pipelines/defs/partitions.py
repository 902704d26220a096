"""Pull partitions: a dynamic ``company`` dimension (one key per connected organisation, its id) x a daily dimension.
The sensor that keeps the company keys in step with ``qbo_connections`` is ``defs/pull/sensors.py``.

The daily dimension starts at ``BATCHLY_PULL_START_DATE`` (default 2024-01-01) and cuts days in
``BATCHLY_PULL_TIMEZONE`` (default UTC), both read when the code location loads. Today is a partition too, so what
changed so far today can be pulled on demand; the nightly schedules pull the last complete day.

A run's partitions are read from its range tags first (:func:`run_partition_keys`): a range backfill launched from a
job page gives its one run the range tags *and* the first partition's ``dagster/partition/<dimension>`` tags, which
Dagster's ``context.partition_keys`` then reads as that one partition.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from dagster import (
    AssetExecutionContext,
    DailyPartitionsDefinition,
    DynamicPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    PartitionKeyRange,
)

from batchly_pipelines.services.pull.mirror import Window
from batchly_pipelines.settings import RuntimeSettings

RUNTIME = RuntimeSettings.from_env()
COMPANY = "company"
DAY = "day"
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"

company_partitions = DynamicPartitionsDefinition(name=COMPANY)
daily_partitions = DailyPartitionsDefinition(
    start_date=RUNTIME.pull_start_date.isoformat(),
    timezone=RUNTIME.pull_timezone,
    end_offset=1,  # today's partition exists too: an on-demand pull of what changed so far today
)
pull_partitions = MultiPartitionsDefinition({COMPANY: company_partitions, DAY: daily_partitions})


def company_key(organization_id: int) -> str:
    """The ``company`` partition key of an organisation."""
    return str(organization_id)


def pull_key(organization_id: int, day: str) -> MultiPartitionKey:
    """The pull partition of one organisation and one day (``YYYY-MM-DD``)."""
    return MultiPartitionKey({COMPANY: company_key(organization_id), DAY: day})


def run_partition_keys(context: AssetExecutionContext) -> list[str]:
    """The pull partitions a run materialises: its partition range when it has one (every key in it), else its
    one partition."""
    tags = context.run.tags
    start, end = tags.get(RANGE_START), tags.get(RANGE_END)
    if start and end:
        keys = pull_partitions.get_partition_keys_in_range(
            PartitionKeyRange(start, end), dynamic_partitions_store=context.instance
        )
        return list(keys)
    return [context.partition_key]


def windows_by_organization(partition_keys: Iterable[str]) -> dict[int, Window]:
    """One window per organisation covering all its days among ``partition_keys`` (a backfill range pulls once)."""
    days: dict[int, list[str]] = defaultdict(list)
    for key in partition_keys:
        dimensions = pull_partitions.get_partition_key_from_str(key).keys_by_dimension
        days[int(dimensions[COMPANY])].append(dimensions[DAY])
    windows = {}
    for organization_id, keys in days.items():
        first = daily_partitions.time_window_for_partition_key(min(keys))
        last = daily_partitions.time_window_for_partition_key(max(keys))
        windows[organization_id] = Window(_utc(first.start), _utc(last.end))
    return windows


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def partition_tags(tags: Mapping[str, str]) -> list[int] | None:
    """The organisations a run's tags name (a range within one company, or a single partition), or None. The range
    comes first: a job's range run also carries its first partition's tags."""
    start, end = tags.get(RANGE_START), tags.get(RANGE_END)
    if start and end:
        companies = {
            pull_partitions.get_partition_key_from_str(key).keys_by_dimension[COMPANY] for key in (start, end)
        }
        return [int(companies.pop())] if len(companies) == 1 else None
    single = tags.get(f"dagster/partition/{COMPANY}")
    if single is not None:
        return [int(single)]
    return None
