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
is not retried. :func:`run_each` is the same over any keys: the webhook CDC sweeps run it over realms
(:func:`batchly_pipelines.services.webhooks.repair.sweep_realms`), each outcome an :class:`Outcome`.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Generic, TypeVar

from batchly_pipelines.quickbooks.errors import AuthError, ReadQuotaExhausted, ReauthorizationRequired

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

DEFAULT_WORKERS = 8
DEFAULT_ATTEMPTS = 3
DEFAULT_RETRY_DELAY_S = 30.0
UNMENDABLE = (AuthError, ReadQuotaExhausted)  # a retry cannot mend these: not retried


@dataclass(frozen=True)
class Outcome(Generic[K, T]):
    """What became of the work on one key (an organisation, a realm): its result, or the error of its last
    attempt."""

    key: K
    result: T | None
    error: str | None
    attempts: int
    duration_s: float

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def organization_id(self) -> K:
        """The key, when the work was per organisation (:func:`run_fleet`)."""
        return self.key


CompanyOutcome = Outcome[int, T]  # one organisation's outcome: its key is the organisation id


def _describe(exc: BaseException) -> str:
    """For the operator's table: the sentence of an error that explains itself (a connection that needs a person,
    an error class marked ``sentence``: a lost lease, a busy company, another company); for any other, ``Type:
    message`` and the innermost frame (where it was raised) — that one is a bug or an outage to look into."""
    if isinstance(exc, ReauthorizationRequired):
        return exc.message
    if getattr(type(exc), "sentence", False):
        return str(exc)
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
    unmendable: tuple[type[BaseException], ...] = UNMENDABLE,
    on_outcome: Callable[[CompanyOutcome[T]], None] | None = None,
) -> list[CompanyOutcome[T]]:
    """Run ``work(organization_id)`` for every organisation, ``workers`` at a time; an organisation whose work
    raises is tried again after ``retry_delay_s`` (other organisations' work goes on meanwhile), ``attempts`` times
    in all, except for the ``unmendable`` errors (by default :class:`AuthError` and :class:`ReadQuotaExhausted`). ``on_outcome`` is called in the calling thread as each organisation
    finishes (to report progress); the outcomes are returned in the order of ``organization_ids``."""
    return run_each(
        organization_ids,
        work,
        workers=workers,
        attempts=attempts,
        retry_delay_s=retry_delay_s,
        unmendable=unmendable,
        on_outcome=on_outcome,
    )


def run_each(
    keys: Iterable[K],
    work: Callable[[K], T],
    *,
    workers: int = DEFAULT_WORKERS,
    attempts: int = DEFAULT_ATTEMPTS,
    retry_delay_s: float = DEFAULT_RETRY_DELAY_S,
    unmendable: tuple[type[BaseException], ...] = UNMENDABLE,
    on_outcome: Callable[[Outcome[K, T]], None] | None = None,
) -> list[Outcome[K, T]]:
    """:func:`run_fleet` for any keys (realms as well as organisations): ``work(key)`` for every key, ``workers``
    at a time, each failure retried and kept to its key; the outcomes in the order of ``keys``."""
    order = list(dict.fromkeys(keys))
    outcomes: dict[K, Outcome[K, T]] = {}
    stop = threading.Event()

    def attempt(key: K) -> Outcome[K, T]:
        started, tried = time.monotonic(), 0
        while True:
            tried += 1
            try:
                result = work(key)
            except Exception as exc:
                error = _describe(exc)
                if tried >= attempts or isinstance(exc, unmendable) or stop.wait(retry_delay_s):
                    return Outcome(key, None, error, tried, time.monotonic() - started)
                continue
            return Outcome(key, result, None, tried, time.monotonic() - started)

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="company") as pool:
        pending: set[Future[Outcome[K, T]]] = {pool.submit(attempt, key) for key in order}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    outcome = future.result()
                    outcomes[outcome.key] = outcome
                    if on_outcome is not None:
                        on_outcome(outcome)
        except BaseException:
            stop.set()  # an interrupted run: no worker sleeps through its retry pause
            for future in pending:
                future.cancel()
            raise
    return [outcomes[key] for key in order]
