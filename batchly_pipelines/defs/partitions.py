"""Pull partitions: one dynamic ``company`` partition per connected organisation, named after it; the days a run
pulls are its tags, not partitions.

A company's key is its name made a slug, then its id (``acme-trading-17``): partition pages and run pages name the
organisation, and the id makes the key unique and gives the organisation back (:func:`organization_id`). The key is
chosen when the company is first seen and kept when the organisation is renamed, so its history stays on one key.
``defs/pull/sensors.py`` keeps the keys in step with ``qbo_connections``.

Why no day dimension: company x day since 2024-01-01 made ~1,070 partitions per company — a million per asset at a
thousand companies, ten times what Dagster's UI and daemon are comfortable with. The pull is incremental (cursors per
entity), so a day partition never meant "that day's data" anyway, only "a pull whose window covered it". A run pulls
the days its tags :data:`FROM_TAG` / :data:`TO_TAG` name (``YYYY-MM-DD``, both included, cut in
``BATCHLY_PULL_TIMEZONE``); without them it pulls incrementally, from where the company's last pull ended. That is
what the nightly schedules do; a range backfill is a backfill of company partitions with the two tags.

A run's companies are its partition range when it has one (:func:`run_company_keys`): the nightly batches and range
backfills run as one run over many companies (``BackfillPolicy.single_run``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from dagster import DagsterInstance, DynamicPartitionsDefinition, Failure

from batchly_pipelines.services.pull.mirror import Window
from batchly_pipelines.settings import RuntimeSettings

RUNTIME = RuntimeSettings.from_env()
COMPANY = "company"
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
PARTITION_TAG = "dagster/partition"
FROM_TAG, TO_TAG = "batchly/pull/from", "batchly/pull/to"
SLUG_LENGTH = 40

company_partitions = DynamicPartitionsDefinition(name=COMPANY)


def company_key(organization_id: int, name: str | None = None) -> str:
    """The ``company`` partition key of an organisation: its name as a slug, a dash, its id."""
    text = unicodedata.normalize("NFKD", name or "").encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:SLUG_LENGTH].strip("-")
    return f"{slug}-{organization_id}" if slug else str(organization_id)


def organization_id(key: str) -> int:
    """The organisation a ``company`` key names (the number after its last dash)."""
    return int(key.rsplit("-", 1)[-1])


def keys_by_organization(keys: Sequence[str]) -> dict[int, str]:
    """``organization id → key`` of company partition keys."""
    return {organization_id(key): key for key in keys}


def run_company_keys(tags: Mapping[str, str], instance: DagsterInstance) -> list[str]:
    """The company partitions a run works on: every key of its range when it has one, else its one partition, else
    none (a run without partitions)."""
    start, end = tags.get(RANGE_START), tags.get(RANGE_END)
    if start and end:
        keys = list(instance.get_dynamic_partitions(COMPANY))
        if start not in keys or end not in keys:
            raise Failure(
                f"the run's company range {start}…{end} names a company that is no longer connected"
            )
        first, last = keys.index(start), keys.index(end)
        return keys[min(first, last) : max(first, last) + 1]
    single = tags.get(PARTITION_TAG) or tags.get(f"{PARTITION_TAG}/{COMPANY}")
    return [single] if single else []


def run_organizations(tags: Mapping[str, str], instance: DagsterInstance) -> list[int]:
    """The organisations of a run's company partitions (see :func:`run_company_keys`)."""
    return [organization_id(key) for key in run_company_keys(tags, instance)]


def _day(tags: Mapping[str, str], name: str) -> date:
    try:
        return date.fromisoformat(tags[name])
    except ValueError:
        raise Failure(f"tag {name} must be a day as YYYY-MM-DD, not {tags[name]!r}") from None


def tagged_window(tags: Mapping[str, str], timezone: str = RUNTIME.pull_timezone) -> Window | None:
    """The window of the days a run's :data:`FROM_TAG` / :data:`TO_TAG` name (both included; either alone is a
    single day), cut in ``timezone``; None without them (the pull is incremental)."""
    if FROM_TAG not in tags and TO_TAG not in tags:
        return None
    first = _day(tags, FROM_TAG if FROM_TAG in tags else TO_TAG)
    last = _day(tags, TO_TAG if TO_TAG in tags else FROM_TAG)
    if last < first:
        raise Failure(f"{TO_TAG} ({last}) is before {FROM_TAG} ({first})")
    zone = ZoneInfo(timezone)

    def midnight(day: date) -> datetime:
        return datetime.combine(day, time(), zone).astimezone(UTC)

    return Window(midnight(first), midnight(last + timedelta(days=1)))


def day_tags(first: date, last: date | None = None) -> dict[str, str]:
    """The tags that make a pull run pull the days ``first`` to ``last`` (both included)."""
    return {FROM_TAG: first.isoformat(), TO_TAG: (last or first).isoformat()}
