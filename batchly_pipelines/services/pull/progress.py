"""Progress of a long pull while it runs: pages fetched of the pages estimated, rows reconciled of the rows waiting,
with an ETA — reported to whoever watches (the CLI prints it, a Dagster step logs it) every few seconds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

REPORT_EVERY_S = 2.0


@dataclass(frozen=True)
class Progress:
    """Where one step of a pull stands."""

    step: str  # "mirror Customer", "reconcile customer", …
    unit: str  # what ``done`` and ``total`` count: "pages" or "rows"
    done: int
    total: int | None  # estimated; None while unknown
    rows: int  # rows handled so far (pages carry up to 1,000)
    elapsed_s: float
    finished: bool = False

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the pace so far; None while the total or the pace is unknown."""
        if self.finished:
            return 0.0
        if self.total is None or self.done <= 0:
            return None
        return max(0.0, self.elapsed_s / self.done * (self.total - self.done))

    def __str__(self) -> str:
        of = f"/{self.total:,}" if self.total is not None else ""
        eta = self.eta_s
        left = "done" if self.finished else (f"ETA {eta:,.0f} s" if eta is not None else "ETA unknown")
        return (
            f"{self.step}: {self.done:,}{of} {self.unit}, {self.rows:,} rows, {self.elapsed_s:,.1f} s, {left}"
        )


ProgressReport = Callable[[Progress], None]


class ProgressMeter:
    """Counts one step's work and reports it at most every :data:`REPORT_EVERY_S` (and once when finished);
    thread-safe. Without a ``report`` it only counts."""

    def __init__(
        self, step: str, unit: str, report: ProgressReport | None, *, total: int | None = None
    ) -> None:
        self.step, self.unit, self.report, self.total = step, unit, report, total
        self.done = 0
        self.rows = 0
        self.started = time.monotonic()
        self._last = self.started
        self._lock = threading.Lock()

    def estimate(self, total: int) -> None:
        """Set (or correct) the estimated total."""
        with self._lock:
            self.total = total

    def add(self, done: int, rows: int) -> None:
        """Count ``done`` more units holding ``rows`` rows; report when due."""
        with self._lock:
            self.done += done
            self.rows += rows
            now = time.monotonic()
            due = now - self._last >= REPORT_EVERY_S
            if due:
                self._last = now
        if due:
            self._send(finished=False)

    def finish(self) -> None:
        """Report the step as finished (its total is then what was done)."""
        with self._lock:
            self.total = max(self.done, self.total or 0)
        self._send(finished=True)

    def _send(self, *, finished: bool) -> None:
        if self.report is None:
            return
        with self._lock:
            state = Progress(
                self.step,
                self.unit,
                self.done,
                self.total,
                self.rows,
                round(time.monotonic() - self.started, 1),
                finished,
            )
        self.report(state)
