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
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from batchly_pipelines.quickbooks import query as q
from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.services.pull.mirror import Window, cdc_since
from batchly_pipelines.services.pull.organization import EPOCH, PAYMENT_ENTITIES
from batchly_pipelines.settings import LOCAL_CLIENT_ID, SettingsError
from batchly_pipelines.store.db import Engine
from batchly_pipelines.store.read_budget import DatabaseReadMeter, month_of, reads_in_month
from batchly_pipelines.store.schema import utcnow

DEFAULT_MONTHLY_QUOTA = 500_000  # Intuit's Builder tier
WARN_AT = 0.8
PAGE_ROWS = 1000  # rows per query page (MAXRESULTS)

# what a pull reads, in order: customers, items, then payments with the invoices and refund receipts they touch
PULL_ENTITIES = ("Customer", "Item", *PAYMENT_ENTITIES)
PULL_CDC_CALLS = (
    3  # one CDC call for deletions per pull step (customers, items, payments), within CDC's 30 days
)
PULL_STEPS: dict[str, tuple[str, ...]] = {
    "pull_customers": ("Customer",),
    "pull_items": ("Item",),
    "pull_payments": PAYMENT_ENTITIES,
}

Level = Literal["ok", "warn", "exhausted"]


def monthly_quota(environ: Mapping[str, str] | None = None) -> int:
    """The app's monthly QuickBooks read quota: ``BATCHLY_READ_QUOTA`` (default 500,000, Intuit's Builder tier)."""
    env = os.environ if environ is None else environ
    text = env.get("BATCHLY_READ_QUOTA", "").strip()
    if not text:
        return DEFAULT_MONTHLY_QUOTA
    try:
        quota = float(text)
    except ValueError:
        quota = 0.0
    if not quota > 0:
        raise SettingsError("BATCHLY_READ_QUOTA", "reads per month, a whole number more than 0", text)
    return int(quota)


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


def estimate_pull_reads(
    client: QuickBooksClient,
    window: Window,
    entities: Sequence[str] = PULL_ENTITIES,
    cdc_calls: int = PULL_CDC_CALLS,
) -> int:
    """What a pull of ``entities`` over ``window`` reads, these estimates included: a ``COUNT(*)`` per entity (made
    now), then per entity a query page per 1,000 rows changed (at least one) and one more ``COUNT(*)`` when its
    first page comes back full (the progress estimate), plus ``cdc_calls`` CDC calls for deletions within CDC's 30
    days. About: the invoices a payment names and pages split between concurrent readers may add a few."""
    rows = {entity: client.count(entity, window.conditions(entity)) for entity in entities}
    cdc = cdc_calls if cdc_since(window) is not None else 0
    progress_counts = sum(1 for n in rows.values() if n >= q.MAX_RESULTS)
    return len(rows) + expected_pull_reads(1, rows, cdc) + progress_counts


def client_cost_note(engine: Engine, client: QuickBooksClient, expected: int) -> str:
    """:func:`read_cost_note` for the app whose reads ``client`` counts (its :class:`DatabaseReadMeter`; without
    one, ``QBO_CLIENT_ID``'s), against ``BATCHLY_READ_QUOTA``."""
    meter = client.read_meter
    if isinstance(meter, DatabaseReadMeter):
        app_id, quota = meter.app_id, meter.quota or monthly_quota()
    else:
        app_id, quota = os.environ.get("QBO_CLIENT_ID") or LOCAL_CLIENT_ID, monthly_quota()
    return read_cost_note(engine, app_id, expected, quota)


def backfill_cost_note(
    engine: Engine,
    client: QuickBooksClient,
    window: Window,
    *,
    step: str | None = None,
    range_given: bool = False,
) -> str | None:
    """The sentence a backfill prints before it starts — a range of days or ``--since`` (``range_given``), or a
    pull from the beginning of time — after the ``COUNT(*)`` queries that size it; ``None`` for an incremental
    pull (a few reads: counting them would cost more than they do). ``step`` is one pull step
    (``pull_customers``, ``pull_items``, ``pull_payments``); without it (or another name), all three."""
    if not range_given and window.start > EPOCH:
        return None
    entities, cdc_calls = (PULL_STEPS[step], 1) if step in PULL_STEPS else (PULL_ENTITIES, PULL_CDC_CALLS)
    expected = estimate_pull_reads(client, window, entities, cdc_calls)
    span = f"{window.start:%Y-%m-%d %H:%M} → {window.end:%Y-%m-%d %H:%M} UTC"
    return f"pull of company {client.realm_id}, {span}: " + client_cost_note(engine, client, expected)
