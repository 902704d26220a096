"""Measuring a client against a realm's real budget: every answer noted, and the figures the limiter is held to.

``throttled_ratio`` is the share of QuickBooks requests answered 429. ``throughput_ratio`` compares the time the
accepted batch calls took with the least the realm's real batch budget allowed: with ``R`` calls per sliding window
of ``W``, call ``k`` can go no sooner than ``W`` after call ``k - R``. The first ``R`` calls keep the times they had
(their pace is the push's own: the budget does not hold them), every later one gets the earliest time the budget
allows after them, and the ratio is the least span over the span measured (1.0: not a moment of budget wasted).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests


@dataclass(frozen=True)
class Answer:
    """One QuickBooks answer: when it arrived (``time.monotonic()``), whether it was a batch call, its status."""

    at: float
    batch: bool
    status: int


class RecordingSession(requests.Session):
    """A session that notes every data API answer (token calls and dropped connections are not answers)."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[Answer] = []
        self._lock = threading.Lock()

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        response = super().request(method, url, *args, **kwargs)
        path = str(url).split("?")[0]
        if "/v3/company/" in path:
            with self._lock:
                self.answers.append(Answer(time.monotonic(), path.endswith("/batch"), response.status_code))
        return response


@dataclass(frozen=True)
class ThrottleFigures:
    """How a run fared against a realm's real batch budget."""

    requests: int
    throttled: int
    batch_calls: int
    seconds: float
    least_seconds: float

    @property
    def throttled_ratio(self) -> float:
        return self.throttled / self.requests if self.requests else 0.0

    @property
    def throughput_ratio(self) -> float:
        """The least time the real budget allows over the time the accepted batch calls took (1.0: perfect)."""
        return self.least_seconds / self.seconds if self.seconds > 0 else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "throttled": self.throttled,
            "throttled_ratio": round(self.throttled_ratio, 4),
            "batch_calls": self.batch_calls,
            "batch_seconds": round(self.seconds, 3),
            "least_batch_seconds": round(self.least_seconds, 3),
            "throughput_ratio": round(self.throughput_ratio, 3),
        }


def throttle_figures(answers: Sequence[Answer], batch_budget: int, window_seconds: float) -> ThrottleFigures:
    """The figures of a run whose realm really takes ``batch_budget`` batch calls per ``window_seconds``."""
    accepted = sorted(a.at for a in answers if a.batch and a.status != 429)
    earliest = accepted[:batch_budget]
    for k in range(batch_budget, len(accepted)):
        earliest.append(max(earliest[k - 1], earliest[k - batch_budget] + window_seconds))
    span = accepted[-1] - accepted[0] if len(accepted) > batch_budget else 0.0
    return ThrottleFigures(
        requests=len(answers),
        throttled=sum(a.status == 429 for a in answers),
        batch_calls=len(accepted),
        seconds=span,
        least_seconds=earliest[-1] - earliest[0] if span else 0.0,
    )
