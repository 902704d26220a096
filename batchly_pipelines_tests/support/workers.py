"""Entry points the multi-process tests run in spawned children (imports kept to what a worker needs)."""

from __future__ import annotations

from typing import Any

from batchly_pipelines.quickbooks.client import ClientConfig, QuickBooksClient
from batchly_pipelines.quickbooks.ratelimit import RateLimits
from batchly_pipelines.services.connections import client_for_organization, database_rate_limiter
from batchly_pipelines.settings import Settings
from batchly_pipelines.store.db import create_engine
from batchly_pipelines_tests.support.quickbooks import TIME_SCALE, SandboxTokens


def refresh_and_count(database_url: str, settings: Settings, org: int, barrier: Any, out: Any) -> None:
    """Wait for every sibling, then make one call for the organisation; report (outcome, answer, token calls)."""
    engine = create_engine(database_url)
    try:
        barrier.wait(timeout=60)
        with client_for_organization(
            engine, settings, org, config=ClientConfig(time_scale=TIME_SCALE)
        ) as qbo:
            out.put(("ok", qbo.count("Account"), qbo.stats.calls["token"]))
    except Exception as exc:  # reported to the parent, which fails the test
        out.put(("error", repr(exc), 0))
    finally:
        engine.dispose()


def hammer(
    database_url: str, base_url: str, realm_id: str, limits: RateLimits, requests: int, out: Any
) -> None:
    """Send ``requests`` queries, ten at a time, through the shared limiter; report (outcome, 429s seen)."""
    engine = create_engine(database_url)
    limiter = database_rate_limiter(engine, realm_id, limits)
    config = ClientConfig(time_scale=TIME_SCALE, max_throttled=0)
    tokens = SandboxTokens(base_url, realm_id)
    try:
        with QuickBooksClient(realm_id, base_url, tokens, limiter=limiter, config=config) as qbo:
            list(qbo._pool.map(lambda _: qbo.count("Account"), range(requests)))
            out.put(("ok", qbo.stats.throttled))
    except Exception as exc:
        out.put(("error", repr(exc)))
    finally:
        engine.dispose()
