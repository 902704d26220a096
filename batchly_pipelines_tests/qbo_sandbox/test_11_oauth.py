"""Checklist 11: OAuth at Intuit's paths, rotating single-use refresh tokens, invalid_grant, 1-hour access tokens."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxConfig, SandboxServer

CLIENT = ("batchly-local-client", "batchly-local-secret")
REDIRECT = "http://localhost:9999/callback"


@pytest.fixture(scope="module")
def oauth_sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig(throttle=False, refresh_grace_seconds=0.0)) as server:
        yield server


def _authorize(sandbox: SandboxServer, **extra: str) -> dict[str, str]:
    params = {
        "client_id": CLIENT[0],
        "response_type": "code",
        "scope": "com.intuit.quickbooks.accounting",
        "redirect_uri": REDIRECT,
        "state": "xyz",
        **extra,
    }
    response = requests.get(
        f"{sandbox.base_url}/connect/oauth2", params=params, allow_redirects=False, timeout=10
    )
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}


def _token(sandbox: SandboxServer, basic: bool = True, **form: str) -> requests.Response:
    url = f"{sandbox.base_url}/oauth2/v1/tokens/bearer"
    if basic:
        return requests.post(url, data=form, auth=CLIENT, timeout=10)
    return requests.post(url, data={**form, "client_id": CLIENT[0], "client_secret": CLIENT[1]}, timeout=10)


def _code_flow(sandbox: SandboxServer, **extra: str) -> tuple[str, dict]:
    callback = _authorize(sandbox, **extra)
    response = _token(sandbox, grant_type="authorization_code", code=callback["code"], redirect_uri=REDIRECT)
    assert response.status_code == 200, response.text
    return callback["realmId"], response.json()


def _company_info(sandbox: SandboxServer, realm: str, access_token: str) -> int:
    url = f"{sandbox.base_url}/v3/company/{realm}/companyinfo/{realm}"
    return requests.get(url, headers={"Authorization": f"Bearer {access_token}"}, timeout=10).status_code


def test_authorization_code_flow(oauth_sandbox: SandboxServer) -> None:
    realm = SandboxAdmin(oauth_sandbox.base_url).new_realm()
    callback = _authorize(oauth_sandbox, realmId=realm)
    assert callback["state"] == "xyz" and callback["realmId"] == realm
    tokens = _token(
        oauth_sandbox, grant_type="authorization_code", code=callback["code"], redirect_uri=REDIRECT
    ).json()
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 3600
    assert tokens["x_refresh_token_expires_in"] == 100 * 86400
    assert _company_info(oauth_sandbox, realm, tokens["access_token"]) == 200
    reused = _token(
        oauth_sandbox, grant_type="authorization_code", code=callback["code"], redirect_uri=REDIRECT
    )
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"


def test_default_realm_when_none_named(oauth_sandbox: SandboxServer) -> None:
    realm, _ = _code_flow(oauth_sandbox)
    assert realm == oauth_sandbox.state.default_realm_id


def test_refresh_rotates_and_old_token_is_single_use(oauth_sandbox: SandboxServer) -> None:
    realm, tokens = _code_flow(oauth_sandbox)
    refreshed = _token(
        oauth_sandbox, basic=False, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert refreshed.status_code == 200
    new = refreshed.json()
    assert new["refresh_token"] != tokens["refresh_token"] and new["access_token"] != tokens["access_token"]
    reused = _token(oauth_sandbox, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert reused.status_code == 400
    assert reused.json() == {
        "error": "invalid_grant",
        "error_description": "Incorrect or invalid refresh token",
    }
    assert (
        _token(oauth_sandbox, grant_type="refresh_token", refresh_token=new["refresh_token"]).status_code
        == 200
    )
    assert _company_info(oauth_sandbox, realm, new["access_token"]) == 200


def test_refresh_grace_period_returns_the_same_successor() -> None:
    with SandboxServer(SandboxConfig(throttle=False, refresh_grace_seconds=60)) as sandbox:
        _, tokens = _code_flow(sandbox)
        first = _token(sandbox, grant_type="refresh_token", refresh_token=tokens["refresh_token"]).json()
        again = _token(sandbox, grant_type="refresh_token", refresh_token=tokens["refresh_token"]).json()
        assert again == first
        SandboxAdmin(sandbox.base_url).advance_clock(61)
        late = _token(sandbox, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
        assert late.json()["error"] == "invalid_grant"


def test_bad_client_credentials(oauth_sandbox: SandboxServer) -> None:
    url = f"{oauth_sandbox.base_url}/oauth2/v1/tokens/bearer"
    response = requests.post(
        url, data={"grant_type": "refresh_token", "refresh_token": "x"}, auth=("a", "b"), timeout=10
    )
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_access_token_expires_after_an_hour(oauth_sandbox: SandboxServer) -> None:
    realm, tokens = _code_flow(oauth_sandbox)
    admin = SandboxAdmin(oauth_sandbox.base_url)
    admin.advance_clock(3599)
    assert _company_info(oauth_sandbox, realm, tokens["access_token"]) == 200
    admin.advance_clock(2)
    assert _company_info(oauth_sandbox, realm, tokens["access_token"]) == 401
    refreshed = _token(
        oauth_sandbox, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    ).json()
    assert _company_info(oauth_sandbox, realm, refreshed["access_token"]) == 200


def test_revoke_kills_the_grant(oauth_sandbox: SandboxServer) -> None:
    realm, tokens = _code_flow(oauth_sandbox)
    url = f"{oauth_sandbox.base_url}/oauth2/v1/tokens/revoke"
    assert (
        requests.post(url, json={"token": tokens["refresh_token"]}, auth=CLIENT, timeout=10).status_code
        == 200
    )
    assert _company_info(oauth_sandbox, realm, tokens["access_token"]) == 401
    reused = _token(oauth_sandbox, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert reused.json()["error"] == "invalid_grant"


def test_token_counters(oauth_sandbox: SandboxServer) -> None:
    admin = SandboxAdmin(oauth_sandbox.base_url)
    before = admin.counters()["global"]
    _, tokens = _code_flow(oauth_sandbox)
    _token(oauth_sandbox, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    after = admin.counters()["global"]
    assert after["token_endpoint_calls"] == before.get("token_endpoint_calls", 0) + 2
    assert after["token_refreshes"] == before.get("token_refreshes", 0) + 1


@pytest.mark.parametrize("path", ["openid_configuration", "openid_sandbox_configuration"])
def test_discovery_documents(oauth_sandbox: SandboxServer, path: str) -> None:
    document = requests.get(f"{oauth_sandbox.base_url}/.well-known/{path}", timeout=10).json()
    assert document["token_endpoint"] == f"{oauth_sandbox.base_url}/oauth2/v1/tokens/bearer"
    assert document["authorization_endpoint"] == f"{oauth_sandbox.base_url}/connect/oauth2"
    assert document["revocation_endpoint"].endswith("/oauth2/v1/tokens/revoke")
    assert document["issuer"].startswith(oauth_sandbox.base_url)
    jwks = requests.get(document["jwks_uri"], timeout=10)
    assert jwks.status_code == 200 and jwks.json()["keys"][0]["kty"] == "RSA"
    assert requests.get(document["userinfo_endpoint"], timeout=10).status_code == 401
    # Intuit's discovery URLs end with a slash
    slashed = requests.get(f"{oauth_sandbox.base_url}/.well-known/{path}/", timeout=10)
    assert slashed.status_code == 200 and slashed.json() == document


def test_openid_grant_gets_an_id_token_and_userinfo(oauth_sandbox: SandboxServer) -> None:
    realm, tokens = _code_flow(oauth_sandbox, scope="com.intuit.quickbooks.accounting openid email")
    _, payload, _ = tokens["id_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["realmid"] == realm and claims["aud"] == [CLIENT[0]]
    assert claims["exp"] - claims["iat"] == 3600
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    info = requests.get(f"{oauth_sandbox.base_url}/v1/openid_connect/userinfo", headers=bearer, timeout=10)
    assert info.status_code == 200 and info.json()["sub"] == claims["sub"] and "email" in info.json()
    assert "givenName" not in info.json()  # no profile scope
    _, plain = _code_flow(oauth_sandbox)
    assert "id_token" not in plain


def test_token_lifetimes_follow_the_time_scale() -> None:
    with SandboxServer(SandboxConfig(throttle=False, time_scale=60.0)) as sandbox:
        realm, tokens = _code_flow(sandbox)
        assert tokens["expires_in"] == 60 and tokens["x_refresh_token_expires_in"] == 100 * 86400 // 60
        assert _company_info(sandbox, realm, tokens["access_token"]) == 200
        SandboxAdmin(sandbox.base_url).advance_clock(61)
        assert _company_info(sandbox, realm, tokens["access_token"]) == 401


def test_every_token_answer_carries_the_grants_hard_expiry_which_refreshes_do_not_extend(
    oauth_sandbox: SandboxServer,
) -> None:
    _, first = _code_flow(oauth_sandbox)
    assert first["x_refresh_token_hard_expires_in"] == 5 * 365 * 86400  # Intuit's 5-year cap from consent
    SandboxAdmin(oauth_sandbox.base_url).advance_clock(3600)
    refreshed = _token(oauth_sandbox, grant_type="refresh_token", refresh_token=first["refresh_token"]).json()
    assert refreshed["x_refresh_token_expires_in"] == 100 * 86400  # the rolling lifetime starts again
    assert refreshed["x_refresh_token_hard_expires_in"] == 5 * 365 * 86400 - 3600  # the cap does not move


def test_a_refresh_token_never_outlives_its_grants_hard_expiry() -> None:
    with SandboxServer(SandboxConfig(throttle=False)) as sandbox:
        _, tokens = _code_flow(sandbox)
        admin = SandboxAdmin(sandbox.base_url)
        for _ in range(20):  # refreshed every 90 days for 1,800 days: 25 days are left of the 5-year cap
            admin.advance_clock(90 * 86400)
            tokens = _token(sandbox, grant_type="refresh_token", refresh_token=tokens["refresh_token"]).json()
        assert tokens["x_refresh_token_hard_expires_in"] == 25 * 86400
        assert tokens["x_refresh_token_expires_in"] == 25 * 86400  # not the 100 days a refresh usually gives
        admin.advance_clock(25 * 86400 + 1)
        expired = _token(sandbox, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
        assert expired.status_code == 400 and expired.json()["error"] == "invalid_grant"
