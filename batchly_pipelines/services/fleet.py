"""Many organisations' work inside one process: each company concurrently in a worker thread, in its own
transactions, its failure kept to itself.

The nightly pull of a thousand companies runs in a handful of Dagster runs (one per batch of companies and job), not
one run per company: a run's step hands its companies to :func:`run_fleet`, which works on ``workers`` of them at a
time. A company's work opens its own QuickBooks client (whose limiter keeps the realm within Intuit's limits, shared
with every other process through the database) and its own transactions, so one company's error — a QuickBooks
outage, a bug, a database error — is caught, retried after a pause (``attempts`` in all) and, when it lasts, reported
as that company's :class:`CompanyOutcome`; the others carry on. An error that a retry cannot mend
(:class:`~batchly_pipelines.quickbooks.errors.AuthError`: the company must be reconnected;
:class:`~batchly_pipelines.quickbooks.errors.ReadQuotaExhausted`: Intuit blocks the app's reads until next month)
is not retried.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Generic, TypeVar

from batchly_pipelines.quickbooks.errors import AuthError, ReadQuotaExhausted

T = TypeVar("T")

DEFAULT_WORKERS = 8
DEFAULT_ATTEMPTS = 3
DEFAULT_RETRY_DELAY_S = 30.0
UNMENDABLE = (AuthError, ReadQuotaExhausted)  # a retry cannot mend these: not retried


@dataclass(frozen=True)
class CompanyOutcome(Generic[T]):
    """What became of one organisation's work: its result, or the error of its last attempt."""

    organization_id: int
    result: T | None
    error: str | None
    attempts: int
    duration_s: float

    @property
    def failed(self) -> bool:
        return self.error is not None


def _describe(exc: BaseException) -> str:
    """``Type: message`` and the innermost frame (where it was raised), for the operator's table."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def run_fleet(
    organization_ids: Iterable[int],
    work: Callable[[int], T],
    *,
    workers: int = DEFAULT_WORKERS,
    attempts: int = DEFAULT_ATTEMPTS,
    retry_delay_s: float = DEFAULT_RETRY_DELAY_S,
    on_outcome: Callable[[CompanyOutcome[T]], None] | None = None,
) -> list[CompanyOutcome[T]]:
    """Run ``work(organization_id)`` for every organisation, ``workers`` at a time; an organisation whose work
    raises is tried again after ``retry_delay_s`` (other organisations' work goes on meanwhile), ``attempts`` times
    in all, except for :class:`AuthError`. ``on_outcome`` is called in the calling thread as each organisation
    finishes (to report progress); the outcomes are returned in the order of ``organization_ids``."""
    order = list(dict.fromkeys(organization_ids))
    outcomes: dict[int, CompanyOutcome[T]] = {}
    stop = threading.Event()

    def attempt(organization_id: int) -> CompanyOutcome[T]:
        started, tried = time.monotonic(), 0
        while True:
            tried += 1
            try:
                result = work(organization_id)
            except Exception as exc:
                error = _describe(exc)
                if tried >= attempts or isinstance(exc, UNMENDABLE) or stop.wait(retry_delay_s):
                    return CompanyOutcome(organization_id, None, error, tried, time.monotonic() - started)
                continue
            return CompanyOutcome(organization_id, result, None, tried, time.monotonic() - started)

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="company") as pool:
        pending: set[Future[CompanyOutcome[T]]] = {pool.submit(attempt, org) for org in order}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    outcome = future.result()
                    outcomes[outcome.organization_id] = outcome
                    if on_outcome is not None:
                        on_outcome(outcome)
        except BaseException:
            stop.set()  # an interrupted run: no worker sleeps through its retry pause
            for future in pending:
                future.cancel()
            raise
    return [outcomes[org] for org in order]
