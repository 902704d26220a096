"""Per-realm throttling as Intuit documents it: 500 requests/min, 10/s, 10 in flight, 40 batch calls/min.

Windows slide and are compressed by the clock's time scale. Rejected requests do not count against the windows.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from qbo_sandbox.clock import Clock, envelope_time
from qbo_sandbox.state import Limits
from qbo_sandbox.wire import Response

THROTTLE_XML = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" time="{time}">'
    '<Fault type="SERVICE"><Error code="3001"><Message>message=ThrottleExceeded; errorCode=003001; statusCode=429'
    "</Message><Detail>The request limit was reached.  Try again later</Detail></Error></Fault></IntuitResponse>"
)


class Throttled(Exception):
    """The request exceeded one of the realm's limits."""


class _Window:
    """Timestamps of admitted requests inside a sliding window."""

    def __init__(self) -> None:
        self.times: deque[float] = deque()

    def full(self, now: float, span: float, limit: int) -> bool:
        while self.times and self.times[0] <= now - span:
            self.times.popleft()
        return limit > 0 and len(self.times) >= limit


class _RealmThrottle:
    def __init__(self) -> None:
        self.minute = _Window()
        self.second = _Window()
        self.batch = _Window()
        self.in_flight = 0


class Throttle:
    """Admission control for every realm; ``enabled=False`` admits everything."""

    def __init__(self, clock: Clock, enabled: bool = True) -> None:
        self.clock = clock
        self.enabled = enabled
        self._lock = threading.Lock()
        self._realms: dict[str, _RealmThrottle] = {}

    @contextmanager
    def admit(self, realm_id: str, limits: Limits, batch: bool) -> Iterator[None]:
        """Hold a slot for the duration of a request; raises :class:`Throttled` when a limit is reached."""
        if not self.enabled:
            yield
            return
        minute, second = self.clock.scaled(60.0), self.clock.scaled(1.0)
        with self._lock:
            realm = self._realms.setdefault(realm_id, _RealmThrottle())
            now = self.clock.monotonic()
            limited = [
                0 < limits.concurrent <= realm.in_flight,
                realm.minute.full(now, minute, limits.per_minute),
                realm.second.full(now, second, limits.per_second),
                batch and realm.batch.full(now, minute, limits.batch_per_minute),
            ]
            if any(limited):
                raise Throttled(realm_id)
            realm.minute.times.append(now)
            realm.second.times.append(now)
            if batch:
                realm.batch.times.append(now)
            realm.in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                realm.in_flight -= 1

    def in_flight(self, realm_id: str) -> int:
        """Requests of the realm admitted and not yet answered (0 when the throttle is off)."""
        with self._lock:
            realm = self._realms.get(realm_id)
            return realm.in_flight if realm is not None else 0


def throttled_response(clock: Clock) -> Response:
    """HTTP 429 with the XML 3001 body Intuit sends even to JSON clients."""
    body = THROTTLE_XML.format(time=envelope_time(clock.now_dt()))
    return Response(429, body.encode(), "application/xml")
