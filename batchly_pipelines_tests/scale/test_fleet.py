"""``services.fleet.run_fleet``: companies worked on concurrently, one company's failure kept to itself and retried."""

from __future__ import annotations

import threading
import time

import pytest

from batchly_pipelines.quickbooks.errors import ReauthorizationRequired, ServerError
from batchly_pipelines.services.fleet import CompanyOutcome, run_fleet


def test_companies_run_concurrently_up_to_the_workers_and_outcomes_keep_their_order() -> None:
    lock, running, peak = threading.Lock(), [0], [0]

    def work(org: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return org * 10

    outcomes = run_fleet(range(12), work, workers=4)
    assert [o.organization_id for o in outcomes] == list(range(12))
    assert [o.result for o in outcomes] == [org * 10 for org in range(12)]
    assert peak[0] == 4  # never more at once than the workers, and as many as allowed


def test_a_failing_company_is_retried_reported_and_never_stops_the_others() -> None:
    calls: dict[int, int] = {}
    reported: list[CompanyOutcome[str]] = []

    def work(org: int) -> str:
        calls[org] = calls.get(org, 0) + 1
        if org == 3:
            raise ServerError("500 all night")
        if org == 5 and calls[org] == 1:
            raise ConnectionError("a blip")
        return "pulled"

    outcomes = run_fleet(
        range(8), work, workers=3, attempts=3, retry_delay_s=0.01, on_outcome=reported.append
    )
    failed = [o for o in outcomes if o.failed]
    assert [(o.organization_id, o.attempts) for o in failed] == [(3, 3)]
    assert failed[0].error is not None and "ServerError: 500 all night" in failed[0].error
    assert all(o.result == "pulled" for o in outcomes if o.organization_id != 3)
    assert (
        next(o for o in outcomes if o.organization_id == 5).attempts == 2
    )  # the blip was retried and mended
    assert sorted(o.organization_id for o in reported) == list(range(8))  # each reported as it finished


def test_an_organisation_that_must_reconnect_is_not_retried() -> None:
    calls: list[int] = []

    def work(org: int) -> None:
        calls.append(org)
        raise ReauthorizationRequired("refresh token expired")

    [outcome] = run_fleet([7], work, attempts=5, retry_delay_s=0.01)
    assert (outcome.failed, outcome.attempts, calls) == (True, 1, [7])


def test_a_retry_pause_does_not_hold_up_the_other_companies() -> None:
    finished: list[int] = []

    def work(org: int) -> None:
        if org == 0:
            raise ServerError("down")
        finished.append(org)

    started = time.monotonic()
    outcomes = run_fleet(range(6), work, workers=2, attempts=2, retry_delay_s=0.5)
    assert sorted(finished) == [1, 2, 3, 4, 5]
    assert outcomes[0].failed
    assert time.monotonic() - started < 1.5  # one pause of the failing company, the others alongside


def test_an_error_in_reporting_propagates() -> None:
    def report(outcome: CompanyOutcome[None]) -> None:
        raise RuntimeError("event log down")

    with pytest.raises(RuntimeError, match="event log down"):
        run_fleet([1, 2], lambda org: None, on_outcome=report)
