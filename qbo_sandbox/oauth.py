"""OAuth 2.0 at Intuit's paths: consent (auto-approved), token endpoint with rotating single-use refresh tokens,
revocation, OpenID Connect (discovery, JWKS, signed ID tokens, userinfo), and bearer-token checks for the data API."""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from qbo_sandbox import faults, openid
from qbo_sandbox.clock import Clock, envelope_time
from qbo_sandbox.state import Realm, SandboxState, TokenRecord
from qbo_sandbox.wire import Request, Response, json_response, loads

ACCESS_TOKEN_LIFETIME = 3600.0
REFRESH_TOKEN_LIFETIME = 100 * 24 * 3600.0  # rolling: every refresh starts it again
REFRESH_TOKEN_HARD_LIFETIME = 5 * 365 * 24 * 3600.0  # Intuit's cap from consent, which refreshes never extend
CODE_LIFETIME = 600.0
SCOPE = "com.intuit.quickbooks.accounting"
SCOPES = (SCOPE, "com.intuit.quickbooks.payment", *openid.OPENID_SCOPES)
# where Intuit serves them (oauth.platform.intuit.com/op/v1/jwks, accounts.platform.intuit.com/v1/openid_connect/...)
ISSUER_PATH = "/op/v1"
JWKS_PATH = "/op/v1/jwks"
USERINFO_PATH = "/v1/openid_connect/userinfo"


def _oauth_error(status: int, error: str, description: str) -> Response:
    return json_response(status, {"error": error, "error_description": description})


def gateway_fault(detail: str, now: float) -> Response:
    """401 in the API gateway's lower-case envelope (code 3200, ``time`` in epoch milliseconds)."""
    error = {
        "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
        "detail": detail,
        "code": "3200",
    }
    body = {"fault": {"error": [error], "type": "AUTHENTICATION"}, "time": int(now * 1000)}
    return json_response(401, body, {"WWW-Authenticate": 'Bearer realm="Intuit", error="invalid_token"'})


class AuthError(Exception):
    """A data API request whose bearer token does not grant access to the realm."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class OAuthServer:
    """Issues, rotates, revokes and checks tokens for one app (client id/secret)."""

    def __init__(
        self,
        state: SandboxState,
        clock: Clock,
        client_id: str,
        client_secret: str,
        refresh_grace_seconds: float,
        open_realm: Callable[[str | None], Realm],
    ) -> None:
        self.state = state
        self.clock = clock
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_grace_seconds = refresh_grace_seconds
        self.open_realm = open_realm
        self._signing_key: openid.SigningKey | None = None
        self._key_lock = threading.Lock()

    # -- consent ---------------------------------------------------------------------------------------------
    def authorize(self, request: Request) -> Response:
        """``GET /connect/oauth2``: auto-approve and redirect to ``redirect_uri`` with code, realmId and state."""
        params = request.query
        if params.get("client_id") != self.client_id:
            return Response(400, b"invalid client_id", "text/plain")
        if params.get("response_type", "code") != "code" or not params.get("redirect_uri"):
            return Response(400, b"response_type=code and redirect_uri are required", "text/plain")
        realm = self.open_realm(params.get("realmId") or self.state.default_realm_id)
        code = secrets.token_urlsafe(24)
        with self.state.lock:
            self.state.tokens[code] = TokenRecord(
                "code",
                realm.realm_id,
                secrets.token_hex(8),
                self._expiry(CODE_LIFETIME),
                params["redirect_uri"],
                scope=params.get("scope") or SCOPE,
                hard_expires_at=self._expiry(REFRESH_TOKEN_HARD_LIFETIME),
            )
        query = {"code": code, "state": params.get("state", ""), "realmId": realm.realm_id}
        separator = "&" if "?" in params["redirect_uri"] else "?"
        return Response(
            302, b"", "text/plain", {"Location": params["redirect_uri"] + separator + urlencode(query)}
        )

    # -- token endpoint --------------------------------------------------------------------------------------
    def token(self, request: Request, base_url: str) -> Response:
        """``POST /oauth2/v1/tokens/bearer``: the authorization_code and refresh_token grants (``base_url``: where
        this server answers, the ID token's issuer)."""
        self.state.counters.add("global", "token_endpoint_calls")
        form = dict(parse_qsl(request.body.decode("utf-8", "replace")))
        if not self._client_ok(request, form):
            return _oauth_error(401, "invalid_client", "Client authentication failed")
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return self._exchange_code(form, base_url)
        if grant_type == "refresh_token":
            return self._refresh(form.get("refresh_token", ""))
        return _oauth_error(400, "unsupported_grant_type", f"Unsupported grant_type {grant_type}")

    def _exchange_code(self, form: dict[str, str], base_url: str) -> Response:
        with self.state.lock:
            record = self.state.tokens.pop(form.get("code", ""), None)
        if record is None or record.kind != "code" or record.expires_at < self.clock.now():
            return _oauth_error(400, "invalid_grant", "Incorrect or invalid authorization code")
        if record.redirect_uri != form.get("redirect_uri"):
            return _oauth_error(400, "invalid_grant", "redirect_uri does not match the authorization request")
        answer = self.issue(record.realm_id, record.grant_id, record.scope, record.hard_expires_at)
        if "openid" in openid.scopes(record.scope):
            claims = openid.id_token_claims(
                self.issuer(base_url),
                self.client_id,
                record.realm_id,
                self.clock.now(),
                self.clock.scaled(ACCESS_TOKEN_LIFETIME),
            )
            answer["id_token"] = openid.jwt(self.signing_key(), claims)
        return json_response(200, answer, _NO_STORE)

    def _refresh(self, refresh_token: str) -> Response:
        with self.state.lock:
            record = self.state.tokens.get(refresh_token)
            now = self.clock.now()
            if (
                record is None
                or record.kind != "refresh"
                or record.grant_id in self.state.revoked_grants
                or record.expires_at < now
            ):
                return _oauth_error(400, "invalid_grant", "Incorrect or invalid refresh token")
            if record.used_at is not None:
                in_grace = now - record.used_at <= self.clock.scaled(self.refresh_grace_seconds)
                if not in_grace or record.successor is None:
                    return _oauth_error(400, "invalid_grant", "Incorrect or invalid refresh token")
                return json_response(200, record.successor, _NO_STORE)
            response = self.issue(record.realm_id, record.grant_id, record.scope, record.hard_expires_at)
            record.used_at = now
            record.successor = response
        self.state.counters.add("global", "token_refreshes")
        self.state.counters.add(record.realm_id, "token_refreshes")
        realm = self.state.realm(record.realm_id)
        if realm is not None and faults.roll(realm, "token_drop_after_refresh"):
            # the grant was applied (new tokens issued, the old refresh token used up); the answer is lost
            self.state.counters.add(record.realm_id, "dropped_connections")
            return Response(0, drop=True)
        return json_response(200, response, _NO_STORE)

    def issue(
        self,
        realm_id: str,
        grant_id: str | None = None,
        scope: str = SCOPE,
        hard_expires_at: float | None = None,
    ) -> dict[str, Any]:
        """Mint an access/refresh token pair for a realm (a new grant unless one is given) with the grant's scopes.

        The refresh token lives 100 days from now, but never past the grant's hard expiry (5 years from consent;
        a new grant's starts now); the answer carries both, as Intuit's does (``x_refresh_token_expires_in``,
        ``x_refresh_token_hard_expires_in``)."""
        grant = grant_id or secrets.token_hex(8)
        now = self.clock.now()
        hard = hard_expires_at if hard_expires_at is not None else self._expiry(REFRESH_TOKEN_HARD_LIFETIME)
        refresh_expires_at = min(self._expiry(REFRESH_TOKEN_LIFETIME), hard)
        access, refresh = secrets.token_urlsafe(48), "AB11" + secrets.token_urlsafe(36)
        with self.state.lock:
            self.state.tokens[access] = TokenRecord(
                "access",
                realm_id,
                grant,
                self._expiry(ACCESS_TOKEN_LIFETIME),
                scope=scope,
                hard_expires_at=hard,
            )
            self.state.tokens[refresh] = TokenRecord(
                "refresh", realm_id, grant, refresh_expires_at, scope=scope, hard_expires_at=hard
            )
            self.state.dirty = True
        return {
            "token_type": "bearer",
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": max(1, round(self.clock.scaled(ACCESS_TOKEN_LIFETIME))),
            "x_refresh_token_expires_in": max(1, round(refresh_expires_at - now)),
            "x_refresh_token_hard_expires_in": max(1, round(hard - now)),
        }

    def revoke(self, request: Request) -> Response:
        """``POST /oauth2/v1/tokens/revoke`` with ``{"token": ...}``: revokes the whole grant."""
        try:
            payload = loads(request.body) if request.body.strip().startswith(b"{") else {}
        except ValueError:
            payload = {}
        form = dict(parse_qsl(request.body.decode("utf-8", "replace"))) if not payload else {}
        if not self._client_ok(request, form):
            return _oauth_error(401, "invalid_client", "Client authentication failed")
        with self.state.lock:
            record = self.state.tokens.get(str(payload.get("token") or form.get("token", "")))
            if record is not None:
                self.state.revoked_grants.add(record.grant_id)
                self.state.dirty = True
        return Response(200, b"", "text/plain")

    @staticmethod
    def issuer(base_url: str) -> str:
        """The ``issuer`` of the discovery document and the ``iss`` of ID tokens."""
        return base_url + ISSUER_PATH

    def discovery(self, base_url: str) -> Response:
        """The OpenID discovery document (Intuit's keys), pointing at this server."""
        return json_response(
            200,
            {
                "issuer": self.issuer(base_url),
                "authorization_endpoint": f"{base_url}/connect/oauth2",
                "token_endpoint": f"{base_url}/oauth2/v1/tokens/bearer",
                "userinfo_endpoint": base_url + USERINFO_PATH,
                "revocation_endpoint": f"{base_url}/oauth2/v1/tokens/revoke",
                "jwks_uri": base_url + JWKS_PATH,
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": list(SCOPES),
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "claims_supported": ["aud", "exp", "iat", "iss", "realmid", "sub", "auth_time"],
            },
        )

    def signing_key(self) -> openid.SigningKey:
        """The key ID tokens are signed with, generated on first use (one per server)."""
        with self._key_lock:
            if self._signing_key is None:
                self._signing_key = openid.SigningKey.generate()
            return self._signing_key

    def jwks(self) -> Response:
        """``GET /op/v1/jwks``: the public key(s) that verify ID tokens."""
        return json_response(200, {"keys": [self.signing_key().jwk()]})

    def userinfo(self, request: Request) -> Response:
        """``GET /v1/openid_connect/userinfo``: the user's claims for an access token of an ``openid`` grant."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        with self.state.lock:
            record = self.state.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
            revoked = record is not None and record.grant_id in self.state.revoked_grants
        if record is None or record.kind != "access" or revoked or record.expires_at < self.clock.now():
            return json_response(
                401,
                {"error": "invalid_token", "error_description": "The access token is invalid or expired"},
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        granted = openid.scopes(record.scope or SCOPE)
        if "openid" not in granted:
            return json_response(
                403,
                {"error": "insufficient_scope", "error_description": "The grant has no openid scope"},
                {"WWW-Authenticate": 'Bearer error="insufficient_scope", scope="openid"'},
            )
        return json_response(200, openid.userinfo(record.realm_id, granted))

    # -- data API --------------------------------------------------------------------------------------------
    def authenticate(self, authorization: str | None, realm_id: str) -> None:
        """Raise :class:`AuthError` (401 / 3200, or 403 / 3100) unless the bearer token is valid for the realm."""
        now = self.clock.now()
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthError(gateway_fault("Token invalid: missing bearer token", now))
        with self.state.lock:
            record = self.state.tokens.get(token.strip())
            revoked = record is not None and record.grant_id in self.state.revoked_grants
        if record is None or record.kind != "access":
            raise AuthError(gateway_fault("Token invalid", now))
        if revoked:
            raise AuthError(gateway_fault("Token revoked", now))
        if record.expires_at < now:
            raise AuthError(gateway_fault(f"Token expired: {token[:12]}...", now))
        if record.realm_id != realm_id:
            error = {
                "Message": "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403",
                "Detail": "The access token does not grant access to this company",
                "code": "3100",
            }
            fault = {
                "Fault": {"Error": [error], "type": "AuthorizationFault"},
                "time": envelope_time(self.clock.now_dt()),
            }
            raise AuthError(json_response(403, fault))

    def _client_ok(self, request: Request, form: dict[str, str]) -> bool:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(header[6:].strip()).decode()
            except (binascii.Error, UnicodeDecodeError):
                return False
            client_id, _, secret = decoded.partition(":")
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        return secrets.compare_digest(client_id.encode(), self.client_id.encode()) and secrets.compare_digest(
            secret.encode(), self.client_secret.encode()
        )

    def _expiry(self, lifetime: float) -> float:
        return self.clock.now() + self.clock.scaled(lifetime)


_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
