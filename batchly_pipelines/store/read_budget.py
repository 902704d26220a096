"""The read meter ``qbo_read_meter``: QuickBooks reads per app, month and realm, as Intuit meters them.

Intuit counts reads ("CorePlus": queries, reads by id, CDC) per app and calendar month; past the quota the app is
blocked until the next month. Every client the sync builds is given a :class:`DatabaseReadMeter`, which adds each
read QuickBooks answered to its app's, month's and realm's row — one short upsert per read, shared by every process.
Months are UTC (Intuit does not say which time zone its month follows).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from batchly_pipelines.store.schema import qbo_read_meter, utcnow

m = qbo_read_meter.c


def month_of(instant: datetime) -> str:
    """The metering month of an instant (UTC), ``YYYY-MM``."""
    return instant.astimezone(UTC).strftime("%Y-%m")


class DatabaseReadMeter:
    """Counts one realm's reads for one app in the Batchly database; a ``quickbooks.client.ReadMeter``."""

    def __init__(
        self,
        engine: Engine,
        app_id: str,
        realm_id: str,
        *,
        quota: int | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.app_id = app_id
        self.realm_id = realm_id
        self.quota = quota  # the app's monthly reads; None: unknown (a 429 is then always a throttle)
        self._now = now

    def __repr__(self) -> str:
        return f"DatabaseReadMeter(app_id={self.app_id!r}, realm_id={self.realm_id!r})"

    def count(self, kind: str) -> None:
        """Add one read (of any kind: query, read, cdc) to this month's row."""
        now = self._now()
        insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        statement = insert(qbo_read_meter).values(
            app_id=self.app_id, month=month_of(now), realm_id=self.realm_id, reads=1, updated_at=now
        )
        statement = statement.on_conflict_do_update(
            index_elements=["app_id", "month", "realm_id"],
            set_={"reads": qbo_read_meter.c.reads + 1, "updated_at": now},
        )
        with self.engine.begin() as conn:
            conn.execute(statement)

    def exhausted(self) -> str | None:
        """Why QuickBooks refuses the app's reads — this month's reads (every realm) reached ``quota`` — or
        ``None``. Asked only when a read was answered 429 (Intuit's quota answer is its throttling body)."""
        if self.quota is None:
            return None
        now = self._now()
        month = month_of(now)
        reads = sum(reads_in_month(self.engine, self.app_id, month).values())
        if reads < self.quota:
            return None
        resets = next_month_start(now)
        return (
            f"the monthly QuickBooks read quota of app {self.app_id} is used up ({reads:,} reads in {month}, "
            f"quota {self.quota:,}): Intuit blocks its reads until the month resets on {resets:%Y-%m-%d} "
            f"00:00 UTC"
        )


def next_month_start(instant: datetime) -> datetime:
    """The first instant of the metering month after ``instant``'s (UTC)."""
    at = instant.astimezone(UTC)
    year, month = (at.year + 1, 1) if at.month == 12 else (at.year, at.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def reads_in_month(engine: Engine, app_id: str, month: str) -> dict[str, int]:
    """The app's reads in ``month`` (``YYYY-MM``), per realm."""
    query = sa.select(m.realm_id, m.reads).where(m.app_id == app_id, m.month == month).order_by(m.realm_id)
    with engine.connect() as conn:
        return {realm: int(reads) for realm, reads in conn.execute(query)}
