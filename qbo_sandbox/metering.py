"""Metered reads, as Intuit counts them since 2026: per app and calendar month, every successful data-API read
("CorePlus": a query, a read by id, a CDC call); writes are not metered. Past the app's quota Intuit blocks its reads
until the next month, answering 429 — so does the sandbox, with the same XML ThrottleExceeded body (Intuit's answer
does not say which limit tripped). Months follow the sandbox clock, in UTC."""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import UTC

from qbo_sandbox.clock import Clock

READ_RESOURCES = frozenset({"query", "cdc"})


def is_read(method: str, resource: str) -> bool:
    """Whether a data-API request is a metered read: a query (GET or POST), CDC, or a GET of an object."""
    return resource in READ_RESOURCES or (method == "GET" and resource != "batch")


class ReadMeter:
    """Reads per app and month, and the app's monthly quota (``None``: unlimited, still counted). Thread-safe."""

    def __init__(self, clock: Clock, quota: int | None = None) -> None:
        self.clock = clock
        self.quota = quota
        self._reads: dict[str, dict[str, int]] = defaultdict(dict)
        self._lock = threading.Lock()

    def _month(self) -> str:
        return self.clock.now_dt().astimezone(UTC).strftime("%Y-%m")

    def blocked(self, app: str) -> bool:
        """Whether the app used up this month's quota."""
        with self._lock:
            return self.quota is not None and self._reads[app].get(self._month(), 0) >= self.quota

    def count(self, app: str) -> None:
        """One successful read of the app, this month."""
        month = self._month()
        with self._lock:
            self._reads[app][month] = self._reads[app].get(month, 0) + 1

    def configure(self, quota: int | None) -> None:
        """Set (or, with ``None``, lift) the monthly quota."""
        if quota is not None and quota < 0:
            raise ValueError("read_quota must be 0 or more, or null")
        with self._lock:
            self.quota = quota

    def report(self) -> dict[str, object]:
        """``{"read_quota", "reads": {app: {month: n}}}``."""
        with self._lock:
            return {
                "read_quota": self.quota,
                "reads": {app: dict(months) for app, months in self._reads.items()},
            }
