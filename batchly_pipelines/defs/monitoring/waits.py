"""A wait for QuickBooks' request window in a run's log: why, how long, and when the work resumes.

The realm's limiter (``quickbooks.ratelimit.SharedRateLimiter.on_wait``) announces each wait before it starts; a
push or pull step hands it a :class:`WaitAnnouncer`, which logs one INFO line per wait however many of the step's
threads meet it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.quickbooks.ratelimit import SharedRateLimiter


class WaitAnnouncer:
    """``(seconds, why)`` → one log line naming ``subject`` and the UTC time the wait ends."""

    def __init__(self, log: Callable[[str], object], subject: str) -> None:
        self.log = log
        self.subject = subject
        self._lock = threading.Lock()
        self._resumes = 0.0  # when the last announced wait ends (time.time())

    def __call__(self, seconds: float, reason: str) -> None:
        resumes = time.time() + seconds
        with self._lock:
            if resumes <= self._resumes + 1.0:  # the same wait, met by another thread
                return
            self._resumes = resumes
        at = datetime.fromtimestamp(resumes, UTC)
        self.log(
            f"{self.subject}: waiting {seconds:.1f}s for QuickBooks — {reason}; resumes at {at:%H:%M:%S} UTC"
        )


def announce_waits(client: QuickBooksClient, log: Callable[[str], object], subject: str) -> None:
    """Have the client's limiter (when it has the shared one) announce its waits in ``log``."""
    if isinstance(client.limiter, SharedRateLimiter):
        client.limiter.on_wait = WaitAnnouncer(log, subject)
