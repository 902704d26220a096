"""The monthly read budget: how many QuickBooks reads the app made this month, against its quota, and what a job
about to start is expected to cost.

Intuit meters reads per app and month (the Builder tier includes 500,000; past the quota the app is blocked until
the next month). :func:`read_budget` reads the meter (``store.read_budget``) and forecasts the month at the current
rate; the ``read_budget`` check warns at 80 % of the quota. Jobs that read a lot — backfills, full reconciliations —
say what they are about to cost with :func:`expected_pull_reads` and :func:`read_cost_note` before they start.
"""

from __future__ import annotations

import calendar
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from batchly_pipelines.store.db import Engine
from batchly_pipelines.store.read_budget import month_of, reads_in_month
from batchly_pipelines.store.schema import utcnow

DEFAULT_MONTHLY_QUOTA = 500_000  # Intuit's Builder tier
WARN_AT = 0.8
PAGE_ROWS = 1000  # rows per query page (MAXRESULTS)

Level = Literal["ok", "warn", "exhausted"]


@dataclass(frozen=True)
class ReadBudget:
    """One app's reads in one month against its quota."""

    app_id: str
    month: str
    quota: int
    reads: int
    forecast: int  # reads by the month's end at the rate so far
    by_realm: dict[str, int] = field(default_factory=dict)

    @property
    def used(self) -> float:
        """The share of the quota used, 0 … 1 (and beyond)."""
        return self.reads / self.quota if self.quota else 0.0

    @property
    def left(self) -> int:
        return max(self.quota - self.reads, 0)

    @property
    def level(self) -> Level:
        """``warn`` from 80 % of the quota, ``exhausted`` once it is used up (Intuit blocks reads)."""
        if self.reads >= self.quota:
            return "exhausted"
        return "warn" if self.used >= WARN_AT else "ok"

    def sentence(self) -> str:
        """What an operator reads in the check."""
        used = (
            f"{self.reads:,} QuickBooks reads in {self.month} "
            f"({percent(self.used)} of the monthly quota of {self.quota:,})"
        )
        share = f" ({percent(self.forecast / self.quota)})" if self.quota else ""
        forecast = f"at the current rate the month ends at about {self.forecast:,}{share}"
        if self.level == "exhausted":
            return f"{used}: Intuit blocks the app's reads until next month; {forecast}"
        if self.level == "warn":
            return f"{used}: {percent(WARN_AT)} or more of the quota is used; {forecast}"
        return f"{used}; {forecast}"


def percent(share: float, digits: int = 0) -> str:
    """``0.8`` → ``"80 %"``."""
    return f"{share * 100:.{digits}f} %"


def read_budget(
    engine: Engine, app_id: str, quota: int = DEFAULT_MONTHLY_QUOTA, now: datetime | None = None
) -> ReadBudget:
    """The app's reads this month (UTC), per realm, and the month's forecast at the rate so far."""
    now = (now or utcnow()).astimezone(UTC)
    month = month_of(now)
    by_realm = reads_in_month(engine, app_id, month)
    reads = sum(by_realm.values())
    days = calendar.monthrange(now.year, now.month)[1]
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    elapsed = (now - start).total_seconds() / 86400
    forecast = reads if elapsed <= 0 else round(reads * days / elapsed)
    return ReadBudget(app_id, month, quota, reads, max(forecast, reads), by_realm)


def expected_pull_reads(
    partitions: int, rows_per_entity: Mapping[str, int], cdc_per_partition: int = 0
) -> int:
    """Reads a pull of ``partitions`` windows costs: per window and entity one query page per 1,000 rows changed
    (at least one), plus ``cdc_per_partition`` CDC calls per window."""
    pages = sum(max(1, math.ceil(rows / PAGE_ROWS)) for rows in rows_per_entity.values())
    return partitions * (pages + cdc_per_partition)


def read_cost_note(
    engine: Engine,
    app_id: str,
    expected: int,
    quota: int = DEFAULT_MONTHLY_QUOTA,
    now: datetime | None = None,
) -> str:
    """The sentence a job prints before it starts: what it is expected to read, against this month's budget."""
    budget = read_budget(engine, app_id, quota, now)
    share = percent(expected / quota, 1) if quota else "an unknown share"
    return (
        f"expected QuickBooks reads: about {expected:,} ({share} of the monthly quota of {quota:,}; "
        f"{budget.reads:,} used this month, {budget.left:,} left)"
    )
