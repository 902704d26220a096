"""Fixtures for the push: a sandbox over real HTTP, an organisation connected to a fresh realm, a pusher.

``settings`` (local mode, pointing at this directory's ``sandbox``) is shared with the client's tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import ClientConfig, QuickBooksClient, WriteOp, WriteResult
from batchly_pipelines.services.connections import client_for_organization
from batchly_pipelines.services.push.organization import PushStats, push_organization
from batchly_pipelines.settings import Settings
from batchly_pipelines_tests.quickbooks.conftest import settings
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.push import LONG_LEASE, TIME_SCALE, Books, connect
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxConfig, SandboxServer

__all__ = ["settings"]  # the client tests' fixture, shared here


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxServer]:
    """One sandbox for the session, throttle off (the throttle is the benchmark's business); a realm per test."""
    with SandboxServer(SandboxConfig(port=0, time_scale=TIME_SCALE, throttle=False)) as server:
        yield server


@pytest.fixture
def environment(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a Dagster deployment reads from its environment."""
    monkeypatch.setenv("QBO_ENVIRONMENT", "local")
    monkeypatch.setenv("QBO_BASE_URL", settings.qbo_base_url)
    monkeypatch.setenv("BATCHLY_SECRET_KEY", settings.secret_key)
    monkeypatch.setenv("BATCHLY_DATABASE_URL", settings.database_url)


@pytest.fixture
def org(engine: Engine, settings: Settings, sandbox: SandboxServer) -> int:
    """An organisation connected to a fresh, empty realm."""
    with engine.begin() as conn:
        organization_id = f.organization(conn)
    connect(engine, settings, organization_id, SandboxAdmin(sandbox.base_url).new_realm())
    return organization_id


@pytest.fixture
def client(engine: Engine, settings: Settings, org: int) -> Iterator[QuickBooksClient]:
    """The organisation's client, as production builds it (tokens and limits through the database)."""
    with client_for_organization(engine, settings, org, config=ClientConfig(time_scale=TIME_SCALE)) as qbo:
        yield qbo


@pytest.fixture
def books(sandbox: SandboxServer, client: QuickBooksClient) -> Books:
    return Books(sandbox, client.realm_id)


@pytest.fixture
def push(engine: Engine, client: QuickBooksClient, org: int) -> Callable[..., PushStats]:
    """Run the push for the organisation (keyword arguments go to ``push_organization``).

    Unless a test is about the lease, it lasts 2 real minutes, as before the lease followed the time scale (2
    QuickBooks minutes are 2 s at ``TIME_SCALE``, which a loaded test machine can stall past)."""

    def run(**kwargs: Any) -> PushStats:
        kwargs.setdefault("lease", LONG_LEASE)
        return push_organization(engine, client, org, worker="test-worker", **kwargs)

    return run


@pytest.fixture
def sent(client: QuickBooksClient, monkeypatch: pytest.MonkeyPatch) -> list[WriteOp]:
    """Every write the push hands to the client (the client still sends it to the sandbox)."""
    ops: list[WriteOp] = []
    write_batch = client.write_batch

    def recording(batch: Sequence[WriteOp], **options: Any) -> list[WriteResult]:
        ops.extend(batch)
        return write_batch(batch, **options)

    monkeypatch.setattr(client, "write_batch", recording)
    return ops
