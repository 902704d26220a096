"""Checklist 12: fault injection — 500/503, slow answers, connections dropped after the write was applied."""

from __future__ import annotations

import time

import pytest
import requests

from batchly_pipelines_tests.support.sandbox_client import Qbo
from qbo_sandbox.admin_client import SandboxAdminError
from qbo_sandbox.server import SandboxConfig, SandboxServer


def test_500_is_a_system_fault_and_nothing_is_written(qbo: Qbo) -> None:
    qbo.admin.set_faults(qbo.realm_id, error_500=1.0)
    response = qbo.post("customer", {"DisplayName": "Never"})
    assert response.status_code == 500
    assert response.json()["Fault"]["type"] == "SystemFault"
    assert response.json()["Fault"]["Error"][0]["code"] == "10000"
    qbo.admin.set_faults(qbo.realm_id)
    assert qbo.query("SELECT COUNT(*) FROM Customer")["totalCount"] == 0


def test_503_is_an_html_gateway_page(qbo: Qbo) -> None:
    qbo.admin.set_faults(qbo.realm_id, error_503=1.0)
    response = qbo.get("companyinfo/" + qbo.realm_id)
    assert response.status_code == 503 and response.headers["Content-Type"].startswith("text/html")


def test_dropped_connection_after_write_then_requestid_retry(qbo: Qbo) -> None:
    qbo.admin.set_faults(qbo.realm_id, drop_after_write=1.0)
    with pytest.raises(requests.ConnectionError):
        qbo.post("customer", {"DisplayName": "Applied Anyway"}, requestid="drop-1")
    qbo.admin.set_faults(qbo.realm_id)
    assert qbo.query("SELECT COUNT(*) FROM Customer")["totalCount"] == 1, "the write was applied"
    retry = qbo.create("Customer", {"DisplayName": "Applied Anyway"}, requestid="drop-1")
    assert qbo.query("SELECT * FROM Customer")["Customer"][0]["Id"] == retry["Id"]
    assert qbo.query("SELECT COUNT(*) FROM Customer")["totalCount"] == 1


def test_reads_are_never_dropped(qbo: Qbo) -> None:
    qbo.admin.set_faults(qbo.realm_id, drop_after_write=1.0)
    assert qbo.get("companyinfo/" + qbo.realm_id).status_code == 200


def test_slow_answers(qbo: Qbo) -> None:
    qbo.admin.set_faults(qbo.realm_id, slow=1.0, slow_ms=200)
    started = time.monotonic()
    assert qbo.get("companyinfo/" + qbo.realm_id).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_fault_rng_is_seedable(qbo: Qbo) -> None:
    def run() -> list[int]:
        qbo.admin.set_faults(qbo.realm_id, error_500=0.5, seed=7)
        return [qbo.get("companyinfo/" + qbo.realm_id).status_code for _ in range(20)]

    first = run()
    assert first == run()
    assert {200, 500} == set(first)


def test_same_second_mode_shares_last_updated_time(qbo: Qbo) -> None:
    qbo.admin.set_faults(qbo.realm_id, same_second=True)
    first = qbo.customer("First")
    with qbo.admin.clock_advanced(5):
        second = Qbo(qbo.sandbox, qbo.realm_id).customer("Second")
    assert first["MetaData"]["LastUpdatedTime"] == second["MetaData"]["LastUpdatedTime"]
    qbo.admin.set_faults(qbo.realm_id)
    third = Qbo(qbo.sandbox, qbo.realm_id).customer("Third")
    assert third["MetaData"]["LastUpdatedTime"] >= first["MetaData"]["LastUpdatedTime"]


def test_bad_fault_settings_are_rejected(qbo: Qbo) -> None:
    for settings in ({"error_500": 2}, {"nonsense": 1}):
        with pytest.raises(SandboxAdminError) as refused:
            qbo.admin.set_faults(qbo.realm_id, **settings)
        assert refused.value.status == 400


def test_latency_is_added_and_scaled() -> None:
    with SandboxServer(SandboxConfig(throttle=False, latency_ms=800, time_scale=4.0)) as sandbox:
        qbo = Qbo(sandbox)
        started = time.monotonic()
        qbo.get("companyinfo/" + qbo.realm_id)
        elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 0.6, "800 ms of latency compressed 4 times"


def test_token_answer_dropped_after_the_refresh_was_applied(qbo: Qbo) -> None:
    old = qbo.admin.tokens(qbo.realm_id)["refresh_token"]
    url = f"{qbo.sandbox.base_url}/oauth2/v1/tokens/bearer"
    form = {"grant_type": "refresh_token", "refresh_token": old}
    auth = ("batchly-local-client", "batchly-local-secret")
    qbo.admin.set_faults(qbo.realm_id, token_drop_after_refresh=1.0)
    assert qbo.admin.faults(qbo.realm_id)["token_drop_after_refresh"] == 1.0
    with pytest.raises(requests.ConnectionError):
        requests.post(url, data=form, auth=auth, timeout=10)
    qbo.admin.set_faults(qbo.realm_id)
    retry = requests.post(url, data=form, auth=auth, timeout=10)
    assert retry.status_code == 400 and retry.json()["error"] == "invalid_grant", "the old token was used up"
    successor = qbo.sandbox.state.tokens[old].successor
    assert successor is not None, "new tokens were issued before the answer was lost"
    qbo.token = successor["access_token"]
    assert qbo.get("companyinfo/" + qbo.realm_id).status_code == 200
    counts = qbo.sandbox.state.counters.report()["realms"][qbo.realm_id]
    assert counts["token_refreshes"] == 1 and counts["dropped_connections"] == 1
    fresh = requests.post(
        url, data={**form, "refresh_token": successor["refresh_token"]}, auth=auth, timeout=10
    )
    assert fresh.status_code == 200, "only refresh answers are dropped, and only while the fault is on"


def test_token_drop_spares_authorization_codes_and_data_calls(qbo: Qbo) -> None:
    qbo.admin.set_faults(qbo.realm_id, token_drop_after_refresh=1.0)
    assert qbo.get("companyinfo/" + qbo.realm_id).status_code == 200
    assert qbo.post("customer", {"DisplayName": "Still answered"}).status_code == 200
    callback = requests.get(
        f"{qbo.sandbox.base_url}/connect/oauth2",
        params={"client_id": "batchly-local-client", "redirect_uri": "http://cb", "realmId": qbo.realm_id},
        allow_redirects=False,
        timeout=10,
    )
    code = callback.headers["Location"].split("code=")[1].split("&")[0]
    exchanged = requests.post(
        f"{qbo.sandbox.base_url}/oauth2/v1/tokens/bearer",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": "http://cb"},
        auth=("batchly-local-client", "batchly-local-secret"),
        timeout=10,
    )
    assert exchanged.status_code == 200
