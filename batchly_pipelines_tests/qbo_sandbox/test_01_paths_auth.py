"""Checklist 1: paths and bearer auth (401 / 3200 gateway envelope, 403 / 3100 for another realm)."""

from __future__ import annotations

import requests

from batchly_pipelines_tests.support.sandbox_client import Qbo
from qbo_sandbox.server import SandboxServer


def test_crud_paths_round_trip(qbo: Qbo) -> None:
    created = qbo.customer("Paths Inc")
    assert qbo.read("Customer", created["Id"])["DisplayName"] == "Paths Inc"
    assert qbo.ok(qbo.get(f"customer/{created['Id']}", minorversion="75"))["Customer"]["Id"] == created["Id"]
    posted = qbo.session.post(
        f"{qbo.url}/query",
        data="SELECT * FROM Customer",
        headers={**qbo.headers(), "Content-Type": "application/text"},
        timeout=10,
    )
    assert [c["Id"] for c in qbo.ok(posted)["QueryResponse"]["Customer"]] == [created["Id"]]


def test_company_info_by_realm_id(qbo: Qbo) -> None:
    info = qbo.read("CompanyInfo", qbo.realm_id)
    assert info["Id"] == "1" and info["CompanyName"]


def _assert_gateway_401(response: requests.Response) -> None:
    assert response.status_code == 401
    body = response.json()
    assert body["fault"]["error"][0]["code"] == "3200"
    assert body["fault"]["type"] == "AUTHENTICATION"
    assert isinstance(body["time"], int)


def test_unknown_token_is_401_3200(qbo: Qbo) -> None:
    qbo.token = "not-a-token"
    _assert_gateway_401(qbo.get("companyinfo/" + qbo.realm_id))


def test_missing_authorization_is_401(qbo: Qbo) -> None:
    response = requests.get(f"{qbo.url}/customer/1", timeout=10)
    _assert_gateway_401(response)


def test_expired_token_is_401_3200(sandbox: SandboxServer) -> None:
    qbo = Qbo(sandbox)
    with qbo.admin.clock_advanced(3601):
        _assert_gateway_401(qbo.get("companyinfo/" + qbo.realm_id))
        assert Qbo(sandbox, qbo.realm_id).get("companyinfo/" + qbo.realm_id).status_code == 200


def test_token_of_another_realm_is_403_3100(sandbox: SandboxServer) -> None:
    first, second = Qbo(sandbox), Qbo(sandbox)
    first.token = second.token
    response = first.get("companyinfo/" + first.realm_id)
    assert response.status_code == 403
    assert response.json()["Fault"]["Error"][0]["code"] == "3100"


def test_unknown_realm_is_403(qbo: Qbo) -> None:
    response = qbo.session.get(
        f"{qbo.sandbox.base_url}/v3/company/123/customer/1", headers=qbo.headers(), timeout=10
    )
    assert response.status_code == 403
