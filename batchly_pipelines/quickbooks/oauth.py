"""OAuth 2.0 against Intuit (or the local sandbox): the authorisation URL, the code exchange and token refresh.

Refresh tokens rotate and the old one may stop working at once, so whoever calls :meth:`OAuthClient.refresh` must
store the new pair before using it (``services.connections`` does, under a per-realm lock). Tokens never appear in
logs, exceptions or reprs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import requests
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from batchly_pipelines.quickbooks.errors import (
    AuthError,
    ReauthorizationRequired,
    ServerError,
    error_from_response,
)

INTUIT_AUTHORIZE_URL = "https://appcenter.intuit.com/connect/oauth2"
INTUIT_TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
# The local sandbox serves OAuth under its own base URL, at these paths.
SANDBOX_AUTHORIZE_PATH = "/connect/oauth2"
SANDBOX_TOKEN_PATH = "/oauth2/v1/tokens/bearer"
SCOPE = "com.intuit.quickbooks.accounting"
# The connection row stays locked while the token endpoint answers (on SQLite: the whole database's writers), so
# every attempt together stays under SQLite's 30 s busy timeout: 3 x (2 s connect + 6 s read) + at most 2 s backoff.
TOKEN_TIMEOUT = (2.0, 6.0)
TOKEN_ATTEMPTS = 3
TOKEN_BACKOFF_MAX = 1.0
# some of Intuit's token endpoints return x_refresh_token_hard_expires_in only when asked for it
TOKEN_HEADERS = {"Accept": "application/json", "x-include-refresh-token-hard-expires-in": "true"}


@dataclass(frozen=True)
class OAuthConfig:
    """The Intuit app's credentials and redirect URI, and where its authorisation and token endpoints are."""

    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    authorize_url: str = INTUIT_AUTHORIZE_URL
    token_url: str = INTUIT_TOKEN_URL


@dataclass(frozen=True)
class TokenSet:
    """An access/refresh token pair and when each expires: the refresh token's rolling expiry (100 days, renewed by
    every refresh) and the grant's hard expiry (Intuit's 5-year cap, which no refresh extends; ``None`` when the
    answer did not say). The tokens are left out of ``repr``."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    access_expires_at: datetime
    refresh_expires_at: datetime | None
    refresh_hard_expires_at: datetime | None = None

    @classmethod
    def from_response(cls, payload: Mapping[str, Any], now: datetime | None = None) -> TokenSet:
        """Parse the token endpoint's JSON answer."""
        now = now or datetime.now(UTC)
        refresh_in = payload.get("x_refresh_token_expires_in")
        hard_in = payload.get("x_refresh_token_hard_expires_in")
        return cls(
            access_token=str(payload["access_token"]),
            refresh_token=str(payload["refresh_token"]),
            access_expires_at=now + timedelta(seconds=float(payload.get("expires_in", 3600))),
            refresh_expires_at=now + timedelta(seconds=float(refresh_in)) if refresh_in else None,
            refresh_hard_expires_at=now + timedelta(seconds=float(hard_in)) if hard_in else None,
        )


@dataclass(frozen=True)
class AuthorizationCallback:
    """What Intuit sends to the redirect URI after consent."""

    code: str = field(repr=False)
    realm_id: str
    state: str


class OAuthClient:
    """The app's side of OAuth 2.0: authorisation URL, code exchange, refresh."""

    def __init__(self, config: OAuthConfig, session: requests.Session | None = None) -> None:
        self.config = config
        self.session = session or requests.Session()

    def authorization_url(self, state: str) -> str:
        """Where a person approves access; Intuit redirects to the redirect URI with ``code``, ``realmId``, ``state``."""
        query = {
            "client_id": self.config.client_id,
            "response_type": "code",
            "scope": SCOPE,
            "redirect_uri": self.config.redirect_uri,
            "state": state,
        }
        return f"{self.config.authorize_url}?{urlencode(query)}"

    def exchange_code(self, code: str) -> TokenSet:
        """Trade an authorisation code for the first token pair."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.config.redirect_uri,
        }
        return self._token_call(form)

    def refresh(self, refresh_token: str) -> TokenSet:
        """Trade a refresh token for a new pair. Raises :class:`ReauthorizationRequired` on ``invalid_grant``.

        A lost answer is retried with the same refresh token: Intuit either answers again within its grace period or
        says ``invalid_grant`` — never a loop.
        """
        return self._token_call({"grant_type": "refresh_token", "refresh_token": refresh_token})

    def _token_call(self, form: dict[str, str]) -> TokenSet:
        retrying = Retrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, ServerError)),
            wait=wait_random_exponential(multiplier=0.2, max=TOKEN_BACKOFF_MAX),
            stop=stop_after_attempt(TOKEN_ATTEMPTS),
            reraise=True,
        )
        return retrying(self._post_token, form)

    def _post_token(self, form: dict[str, str]) -> TokenSet:
        auth = (self.config.client_id, self.config.client_secret)
        try:
            response = self.session.post(
                self.config.token_url,
                data=form,
                auth=auth,
                headers=TOKEN_HEADERS,
                timeout=TOKEN_TIMEOUT,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise ServerError(f"token endpoint unreachable or answer lost ({type(exc).__name__})") from None
        if response.status_code == 200:
            return TokenSet.from_response(response.json())
        error = _oauth_error(response)
        if error == "invalid_grant":
            raise ReauthorizationRequired(
                "the refresh token was refused (invalid_grant)",
                code="invalid_grant",
                status=response.status_code,
            )
        if error:
            raise AuthError(
                f"token endpoint refused the request ({error})", code=error, status=response.status_code
            )
        raise error_from_response(response.status_code, response.content, response.headers)


def _oauth_error(response: requests.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return ""
    return str(payload.get("error", "")) if isinstance(payload, dict) else ""
