"""The push's progress: rates over the time the push worked (not its linger), an ETA the company's request budget
can keep, and waits for QuickBooks' window announced with when they end."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy.engine import Engine

from batchly_pipelines.defs.monitoring.waits import announce_waits
from batchly_pipelines.defs.push.job import _ProgressReporter
from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.quickbooks.ratelimit import RateLimits
from batchly_pipelines.services.connections import database_rate_limiter
from batchly_pipelines.services.push.organization import Progress, budget_per_minute


def test_the_eta_follows_the_companys_budget_when_the_burst_was_faster() -> None:
    burst = Progress(done=870, total=1501, elapsed_seconds=5.0, budget_per_minute=1200.0)
    assert burst.per_minute == pytest.approx(10_440)  # what the first seconds looked like
    assert burst.eta_seconds == pytest.approx(631 / 1200 * 60)  # what the budget lets through: 32 s, not 4
    assert "ETA 32s" in str(burst) and "budget 1200/min" in str(burst)
    slow = Progress(done=100, total=200, elapsed_seconds=60.0, budget_per_minute=1200.0)
    assert slow.eta_seconds == pytest.approx(60.0)  # slower than the budget: its own pace


def test_the_budget_is_what_the_realms_batch_window_lets_the_push_write(engine: Engine) -> None:
    limiter = database_rate_limiter(engine, "realm-budget", RateLimits(batch_per_minute=40, time_scale=60.0))
    # 40 batch calls of 30 records per QuickBooks minute, which lasts one second at time scale 60
    assert budget_per_minute(limiter) == pytest.approx(40 * 30 * 60)
    assert budget_per_minute(None) is None


def test_a_wait_for_the_window_is_announced_before_it_starts(engine: Engine) -> None:
    limiter = database_rate_limiter(engine, "realm-waits", RateLimits(batch_per_minute=2, time_scale=60.0))
    waits: list[tuple[float, str]] = []
    limiter.on_wait = lambda seconds, reason: waits.append((seconds, reason))
    for _ in range(3):  # the third batch call has to wait for the (one-second) window
        with limiter.slot(batch=True):
            pass
    assert len(waits) == 1
    seconds, reason = waits[0]
    assert 0.5 < seconds <= 1.1 and "window" in reason
    limiter.pause(2.0)
    assert waits[-1] == (2.0, "QuickBooks refused a request (429): every process holds off")


def test_the_run_log_says_once_per_wait_why_and_when_the_push_resumes() -> None:
    lines: list[str] = []
    context = SimpleNamespace(log=SimpleNamespace(info=lines.append))
    report = _ProgressReporter(context, 7)  # type: ignore[arg-type]
    for _ in range(3):  # the push's threads meet the same wait
        report.waiting(55.0, "the company's request window is full")
    [line] = lines
    resumes = datetime.now(UTC) + timedelta(seconds=55)
    assert line.startswith(
        "organisation 7: waiting 55.0s for QuickBooks — the company's request window is full"
    )
    assert re.search(r"resumes at (\d\d:\d\d:\d\d) UTC$", line)
    shown = datetime.strptime(line[-12:-4], "%H:%M:%S")
    off = (shown.hour * 3600 + shown.minute * 60 + shown.second) - (
        resumes.hour * 3600 + resumes.minute * 60 + resumes.second
    )
    assert min(abs(off), 86400 - abs(off)) <= 2  # (the clock may pass midnight meanwhile)
    report.waiting(120.0, "QuickBooks refused a request (429): every process holds off")  # a longer, new wait
    assert len(lines) == 2


def test_a_clients_limiter_announces_its_waits_in_the_log_it_is_given(engine: Engine) -> None:
    lines: list[str] = []
    limiter = database_rate_limiter(engine, "realm-announced")
    with QuickBooksClient("realm-announced", "http://127.0.0.1:1", _NoTokens(), limiter=limiter) as client:
        announce_waits(client, lines.append, "company acme-1")
        limiter.pause(3.0)  # what the client does after a 429
    [line] = lines
    assert line.startswith("company acme-1: waiting 3.0s for QuickBooks — QuickBooks refused a request (429)")
    assert "resumes at" in line


class _NoTokens:
    def access_token(self) -> str:
        return "unused"

    def refresh(self, rejected_access_token: str) -> str:
        return "unused"
