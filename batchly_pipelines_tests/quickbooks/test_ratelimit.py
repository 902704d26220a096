"""Per-realm limits shared through the Batchly database (SQLite and PostgreSQL): windows, in-flight leases that
expire, pauses seen by every process, several processes staying under the sandbox's throttle, and a throttled run
that finishes with every record written."""

from __future__ import annotations

import multiprocessing
import threading
import time

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import ClientConfig, QuickBooksClient, WriteOp
from batchly_pipelines.quickbooks.ratelimit import RateLimits, SharedRateLimiter
from batchly_pipelines.services.connections import database_rate_limiter
from batchly_pipelines.store.schema import qbo_rate_requests
from batchly_pipelines_tests.support import workers
from batchly_pipelines_tests.support.quickbooks import TIME_SCALE, SandboxTokens
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxServer

WINDOW = 60.0 / TIME_SCALE  # one documented minute


def _timed_slots(limiter: SharedRateLimiter, count: int, batch: bool = False) -> list[float]:
    started, marks = time.monotonic(), []
    for _ in range(count):
        with limiter.slot(batch=batch):
            marks.append(time.monotonic() - started)
    return marks


def test_minute_window_holds_the_request_over_the_limit(engine: Engine) -> None:
    limiter = database_rate_limiter(engine, "realm-minute", RateLimits(per_minute=5, time_scale=TIME_SCALE))
    marks = _timed_slots(limiter, 6)
    assert marks[4] < 0.3 * WINDOW
    assert WINDOW <= marks[5] < 1.5 * WINDOW


def test_batch_window_is_separate_and_counts_towards_the_total(engine: Engine) -> None:
    limits = RateLimits(per_minute=3, batch_per_minute=2, time_scale=TIME_SCALE)
    limiter = database_rate_limiter(engine, "realm-batch", limits)
    assert _timed_slots(limiter, 2, batch=True)[1] < 0.3 * WINDOW
    other = database_rate_limiter(engine, "realm-batch", limits)  # the same realm, seen by another client
    assert _timed_slots(other, 1)[0] < 0.3 * WINDOW  # the batch window is full, plain requests still pass
    assert _timed_slots(other, 1, batch=True)[0] >= WINDOW


def test_in_flight_slots_are_released_and_expire(engine: Engine) -> None:
    limits = RateLimits(concurrent=1, time_scale=TIME_SCALE)
    limiter = database_rate_limiter(engine, "realm-lease", limits)
    # A process that crashed mid-request left its lease behind; it blocks only until it expires.
    with engine.begin() as conn:
        now = time.time()
        crashed = {"realm_id": "realm-lease", "sent_at": now, "in_flight_until": now + 0.4}
        conn.execute(sa.insert(qbo_rate_requests).values(**crashed))
    assert 0.35 <= _timed_slots(limiter, 1)[0] < 1.5

    holding, released = threading.Event(), threading.Event()

    def hold() -> None:
        with limiter.slot():
            holding.set()
            released.wait(5)

    second = database_rate_limiter(engine, "realm-lease", limits)  # a different process's limiter
    worker = threading.Thread(target=hold)
    worker.start()
    holding.wait(5)
    threading.Timer(0.3, released.set).start()
    waited = _timed_slots(second, 1)[0]
    worker.join()
    assert waited >= 0.25
    with engine.connect() as conn:
        flying = sa.select(sa.func.count()).where(qbo_rate_requests.c.in_flight_until > time.time())
        assert conn.execute(flying).scalar_one() == 0


def test_a_pause_holds_every_limiter_of_the_realm(engine: Engine) -> None:
    first = database_rate_limiter(engine, "realm-pause", RateLimits(time_scale=TIME_SCALE))
    second = database_rate_limiter(engine, "realm-pause", RateLimits(time_scale=TIME_SCALE))
    unrelated = database_rate_limiter(engine, "realm-other", RateLimits(time_scale=TIME_SCALE))
    first.pause(0.4)
    first.pause(0.1)  # never shortens
    assert _timed_slots(unrelated, 1)[0] < 0.2
    assert 0.3 <= _timed_slots(second, 1)[0] < 1.0


def test_four_processes_share_one_realm_budget(sandbox: SandboxServer, realm_id: str, engine: Engine) -> None:
    limits = RateLimits(per_minute=60, time_scale=TIME_SCALE)
    SandboxAdmin(sandbox.base_url).settings(realm_id, limits={"per_minute": 60})
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    url = engine.url.render_as_string(hide_password=False)
    processes = [
        context.Process(target=workers.hammer, args=(url, sandbox.base_url, realm_id, limits, 40, out))
        for _ in range(4)
    ]
    started = time.monotonic()
    for process in processes:
        process.start()
    outcomes = [out.get(timeout=120) for _ in processes]
    elapsed = time.monotonic() - started
    for process in processes:
        process.join(timeout=30)
    # 160 requests at 60 per window: every process got through without a single 429, which takes > 2 windows.
    assert outcomes == [("ok", 0)] * 4
    assert SandboxAdmin(sandbox.base_url).counter(realm_id, "throttled") == 0
    assert elapsed >= 2 * WINDOW


def test_a_throttled_run_finishes_and_reports_its_waits(
    sandbox: SandboxServer, realm_id: str, engine: Engine
) -> None:
    # The server allows far fewer batch calls than the client believes: every extra one is a 429 it must wait out.
    SandboxAdmin(sandbox.base_url).settings(realm_id, limits={"batch_per_minute": 4})
    limiter = database_rate_limiter(engine, realm_id, RateLimits(time_scale=TIME_SCALE))
    config = ClientConfig(time_scale=TIME_SCALE)
    with QuickBooksClient(
        realm_id, sandbox.base_url, SandboxTokens(sandbox.base_url, realm_id), limiter=limiter, config=config
    ) as qbo:
        ops = [
            WriteOp(i, "Customer", "create", {"DisplayName": f"Throttled {i}"}, f"t-{i}") for i in range(300)
        ]
        results = qbo.write_batch(ops)
        assert [r for r in results if not r.ok] == []
        assert qbo.count("Customer") == 300
        stats = qbo.stats.as_dict()
    assert stats["throttled"] > 0 and stats["throttle_wait_seconds"] > 0
    assert stats["throttled"] == SandboxAdmin(sandbox.base_url).counter(realm_id, "throttled")
    assert stats["calls"]["batch"] == 10 + stats["throttled"]  # a 429 never costs a record an attempt
    assert stats["retries"] == 0
