"""The sandbox clock: wall time that tests can move forward, and a scale that shrinks every window and lifetime."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

PACIFIC = ZoneInfo("America/Los_Angeles")


class Clock:
    """Wall and monotonic time shifted by an adjustable offset; ``scaled`` divides durations by ``time_scale``."""

    def __init__(self, time_scale: float = 1.0) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = time_scale
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        """Seconds since the epoch on the sandbox clock."""
        return time.time() + self._offset

    def monotonic(self) -> float:
        """Monotonic seconds that also move when the clock is advanced (throttle windows use this)."""
        return time.monotonic() + self._offset

    def now_dt(self) -> datetime:
        """The sandbox time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.now(), UTC)

    def advance(self, seconds: float) -> None:
        """Move the sandbox clock forward (or back, if negative)."""
        with self._lock:
            self._offset += seconds

    def scaled(self, seconds: float) -> float:
        """A documented duration (window, lifetime, delay) compressed by the time scale."""
        return seconds / self.time_scale


def metadata_time(instant: datetime) -> str:
    """``MetaData`` timestamp: second precision, US Pacific offset (``2015-07-23T11:04:15-07:00``)."""
    return instant.astimezone(PACIFIC).replace(microsecond=0).isoformat()


def envelope_time(instant: datetime) -> str:
    """The envelope ``time``: millisecond precision, US Pacific offset."""
    return instant.astimezone(PACIFIC).isoformat(timespec="milliseconds")


def pacific_date(instant: datetime) -> date:
    """The company-local (Pacific) calendar date of an instant."""
    return instant.astimezone(PACIFIC).date()


def parse_instant(text: str) -> datetime:
    """Parse an ISO date or date-time; a date or a naive time means Pacific local time. Raises ValueError."""
    parsed = datetime.fromisoformat(text.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=PACIFIC)
    return parsed.astimezone(UTC)
