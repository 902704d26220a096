from __future__ import annotations

from collections.abc import Iterator

import pytest

from batchly_pipelines_tests.support.sandbox_client import Qbo
from qbo_sandbox.server import SandboxConfig, SandboxServer


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxServer]:
    """One unthrottled sandbox for the whole session; tests isolate themselves with a fresh realm."""
    with SandboxServer(SandboxConfig(throttle=False)) as server:
        yield server


@pytest.fixture
def qbo(sandbox: SandboxServer) -> Qbo:
    """A fresh company and an access token for it."""
    return Qbo(sandbox)
