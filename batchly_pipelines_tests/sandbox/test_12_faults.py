"""Checklist 12: fault injection — 500/503, slow answers, connections dropped after the write was applied."""

from __future__ import annotations

import time

import pytest
import requests

from batchly_pipelines.sandbox.server import SandboxConfig, SandboxServer
from batchly_pipelines_tests.sandbox.client import Qbo, admin


def _faults(qbo: Qbo, **settings: object) -> None:
    admin(qbo.sandbox, f"realms/{qbo.realm_id}/faults", settings)


def test_500_is_a_system_fault_and_nothing_is_written(qbo: Qbo) -> None:
    _faults(qbo, error_500=1.0)
    response = qbo.post("customer", {"DisplayName": "Never"})
    assert response.status_code == 500
    assert response.json()["Fault"]["type"] == "SystemFault"
    assert response.json()["Fault"]["Error"][0]["code"] == "10000"
    _faults(qbo)
    assert qbo.query("SELECT COUNT(*) FROM Customer")["totalCount"] == 0


def test_503_is_an_html_gateway_page(qbo: Qbo) -> None:
    _faults(qbo, error_503=1.0)
    response = qbo.get("companyinfo/" + qbo.realm_id)
    assert response.status_code == 503 and response.headers["Content-Type"].startswith("text/html")


def test_dropped_connection_after_write_then_requestid_retry(qbo: Qbo) -> None:
    _faults(qbo, drop_after_write=1.0)
    with pytest.raises(requests.ConnectionError):
        qbo.post("customer", {"DisplayName": "Applied Anyway"}, requestid="drop-1")
    _faults(qbo)
    assert qbo.query("SELECT COUNT(*) FROM Customer")["totalCount"] == 1, "the write was applied"
    retry = qbo.create("Customer", {"DisplayName": "Applied Anyway"}, requestid="drop-1")
    assert qbo.query("SELECT * FROM Customer")["Customer"][0]["Id"] == retry["Id"]
    assert qbo.query("SELECT COUNT(*) FROM Customer")["totalCount"] == 1


def test_reads_are_never_dropped(qbo: Qbo) -> None:
    _faults(qbo, drop_after_write=1.0)
    assert qbo.get("companyinfo/" + qbo.realm_id).status_code == 200


def test_slow_answers(qbo: Qbo) -> None:
    _faults(qbo, slow=1.0, slow_ms=200)
    started = time.monotonic()
    assert qbo.get("companyinfo/" + qbo.realm_id).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_fault_rng_is_seedable(qbo: Qbo) -> None:
    def run() -> list[int]:
        _faults(qbo, error_500=0.5, seed=7)
        return [qbo.get("companyinfo/" + qbo.realm_id).status_code for _ in range(20)]

    first = run()
    assert first == run()
    assert {200, 500} == set(first)


def test_same_second_mode_shares_last_updated_time(qbo: Qbo) -> None:
    _faults(qbo, same_second=True)
    first = qbo.customer("First")
    admin(qbo.sandbox, "clock", {"advance_seconds": 5})
    try:
        second = Qbo(qbo.sandbox, qbo.realm_id).customer("Second")
    finally:
        admin(qbo.sandbox, "clock", {"advance_seconds": -5})
    assert first["MetaData"]["LastUpdatedTime"] == second["MetaData"]["LastUpdatedTime"]
    _faults(qbo)
    third = Qbo(qbo.sandbox, qbo.realm_id).customer("Third")
    assert third["MetaData"]["LastUpdatedTime"] >= first["MetaData"]["LastUpdatedTime"]


def test_bad_fault_settings_are_rejected(qbo: Qbo) -> None:
    url = f"{qbo.sandbox.base_url}/__sandbox__/realms/{qbo.realm_id}/faults"
    assert requests.post(url, json={"error_500": 2}, timeout=10).status_code == 400
    assert requests.post(url, json={"nonsense": 1}, timeout=10).status_code == 400


def test_latency_is_added_and_scaled() -> None:
    with SandboxServer(SandboxConfig(throttle=False, latency_ms=800, time_scale=4.0)) as sandbox:
        qbo = Qbo(sandbox)
        started = time.monotonic()
        qbo.get("companyinfo/" + qbo.realm_id)
        elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 0.6, "800 ms of latency compressed 4 times"
