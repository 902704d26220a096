"""Checklist 10: per-realm throttling (500/min sliding, 10/s, 10 in flight, 40 batch/min) with the XML 3001 body."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from batchly_pipelines_tests.support.sandbox_client import Qbo
from qbo_sandbox.server import SandboxConfig, SandboxServer


@pytest.fixture(scope="module")
def realtime() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig(throttle=True, time_scale=1.0)) as server:
        yield server


@pytest.fixture(scope="module")
def compressed() -> Iterator[SandboxServer]:
    """A minute lasts 6 s."""
    with SandboxServer(SandboxConfig(throttle=True, time_scale=10.0)) as server:
        yield server


def _limits(qbo: Qbo, **limits: int) -> None:
    qbo.admin.settings(qbo.realm_id, limits=limits)


def _assert_throttled(response: requests.Response) -> None:
    assert response.status_code == 429
    assert response.headers["Content-Type"].startswith("application/xml")
    assert '<Error code="3001">' in response.text
    assert "ThrottleExceeded" in response.text and "<Fault type=" in response.text


def test_501st_request_in_a_minute_is_429(compressed: SandboxServer) -> None:
    qbo = Qbo(compressed)
    _limits(qbo, per_second=0)
    path = "companyinfo/" + qbo.realm_id
    statuses = [qbo.get(path).status_code for _ in range(500)]
    assert statuses == [200] * 500
    _assert_throttled(qbo.get(path))
    other = Qbo(compressed)
    assert other.get("companyinfo/" + other.realm_id).status_code == 200, "limits are per realm"
    qbo.admin.advance_clock(6.1)
    assert qbo.get(path).status_code == 200, "the window slides"
    realm_counts = qbo.admin.counters()["realms"][qbo.realm_id]
    assert realm_counts["throttled"] == 1 and realm_counts["requests"]["GET companyinfo"] == 502


def test_eleventh_request_in_a_second_is_429(realtime: SandboxServer) -> None:
    qbo = Qbo(realtime)
    path = "companyinfo/" + qbo.realm_id
    statuses = [qbo.get(path).status_code for _ in range(11)]
    assert statuses[:10] == [200] * 10 and statuses[10] == 429


def test_more_than_ten_in_flight_is_429(realtime: SandboxServer) -> None:
    qbo = Qbo(realtime)
    _limits(qbo, per_second=0)
    qbo.admin.set_faults(qbo.realm_id, slow=1.0, slow_ms=1000)
    url = f"{qbo.url}/companyinfo/{qbo.realm_id}"

    def call(_: int) -> int:
        return requests.get(url, headers=qbo.headers(), timeout=10).status_code

    with ThreadPoolExecutor(max_workers=13) as pool:
        statuses = list(pool.map(call, range(13)))
    assert sorted(statuses) == [200] * 10 + [429] * 3


def test_batch_calls_count_against_both_limits(realtime: SandboxServer) -> None:
    qbo = Qbo(realtime)
    _limits(qbo, per_second=0, per_minute=45)
    batch = {"BatchItemRequest": [{"bId": "1", "Query": "SELECT COUNT(*) FROM Customer"}]}
    statuses = [qbo.post("batch", batch).status_code for _ in range(40)]
    assert statuses == [200] * 40
    _assert_throttled(qbo.post("batch", batch))
    path = "companyinfo/" + qbo.realm_id
    assert [qbo.get(path).status_code for _ in range(6)] == [200] * 5 + [429]


def test_throttle_off_admits_everything(sandbox: SandboxServer) -> None:
    qbo = Qbo(sandbox)
    assert {qbo.get("companyinfo/" + qbo.realm_id).status_code for _ in range(30)} == {200}
