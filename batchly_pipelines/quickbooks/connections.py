"""QuickBooks connections: OAuth 2.0 against Intuit (or the sandbox), tokens encrypted in ``qbo_connections``.

Refresh tokens rotate and the old one may stop working at once, so a refresh is treated as single-use and serialised
per realm across processes: the connection row is locked (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's
``BEGIN IMMEDIATE`` transaction serialises writers), re-read inside the lock (another process may have refreshed
already: then its token is used), the token endpoint is called, the new pair is stored with ``token_version`` bumped
and committed, and only then is the new access token used. ``invalid_grant`` marks the connection ``needs_reauth``
with a message naming the command to run; other realms are untouched. Tokens never appear in logs, exceptions or
reprs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import requests
import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.engine import Connection, Engine
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from batchly_pipelines.quickbooks.client import ClientConfig, ClientStats, QuickBooksClient
from batchly_pipelines.quickbooks.errors import (
    AuthError,
    ReauthorizationRequired,
    ServerError,
    error_from_response,
)
from batchly_pipelines.quickbooks.ratelimit import DatabaseRateLimiter, RateLimits
from batchly_pipelines.settings import Settings
from batchly_pipelines.store.schema import qbo_connections, utcnow

INTUIT_AUTHORIZE_URL = "https://appcenter.intuit.com/connect/oauth2"
INTUIT_TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
SCOPE = "com.intuit.quickbooks.accounting"
# The connection row stays locked while the token endpoint answers (on SQLite: the whole database's writers), so
# every attempt together stays under SQLite's 30 s busy timeout: 3 x (2 s connect + 6 s read) + at most 2 s backoff.
TOKEN_TIMEOUT = (2.0, 6.0)
TOKEN_ATTEMPTS = 3
TOKEN_BACKOFF_MAX = 1.0
REFRESH_AHEAD_SECONDS = 300.0  # refresh this long before the access token expires (scaled by the time scale)


def reauthorize_hint(organization_id: int) -> str:
    """What an operator runs to connect a company again."""
    return f"re-authorise with `batchly-sync connect --org {organization_id}`"


@dataclass(frozen=True)
class TokenSet:
    """An access/refresh token pair and when each expires. The tokens are left out of ``repr``."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    access_expires_at: datetime
    refresh_expires_at: datetime | None

    @classmethod
    def from_response(cls, payload: Mapping[str, Any], now: datetime | None = None) -> TokenSet:
        """Parse the token endpoint's JSON answer."""
        now = now or utcnow()
        refresh_in = payload.get("x_refresh_token_expires_in")
        return cls(
            access_token=str(payload["access_token"]),
            refresh_token=str(payload["refresh_token"]),
            access_expires_at=now + timedelta(seconds=float(payload.get("expires_in", 3600))),
            refresh_expires_at=now + timedelta(seconds=float(refresh_in)) if refresh_in else None,
        )


class OAuthClient:
    """The app's side of OAuth 2.0: authorisation URL, code exchange, refresh."""

    def __init__(self, settings: Settings, session: requests.Session | None = None) -> None:
        self.settings = settings
        self.session = session or requests.Session()
        local = settings.is_local
        self.authorize_url = f"{settings.qbo_base_url}/connect/oauth2" if local else INTUIT_AUTHORIZE_URL
        self.token_url = f"{settings.qbo_base_url}/oauth2/v1/tokens/bearer" if local else INTUIT_TOKEN_URL

    def authorization_url(self, state: str) -> str:
        """Where a person approves access; Intuit redirects to the redirect URI with ``code``, ``realmId``, ``state``."""
        query = {
            "client_id": self.settings.qbo_client_id,
            "response_type": "code",
            "scope": SCOPE,
            "redirect_uri": self.settings.qbo_redirect_uri,
            "state": state,
        }
        return f"{self.authorize_url}?{urlencode(query)}"

    def exchange_code(self, code: str) -> TokenSet:
        """Trade an authorisation code for the first token pair."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.settings.qbo_redirect_uri,
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
        auth = (self.settings.qbo_client_id, self.settings.qbo_client_secret)
        try:
            response = self.session.post(
                self.token_url,
                data=form,
                auth=auth,
                headers={"Accept": "application/json"},
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


@dataclass(frozen=True)
class ConnectionRecord:
    """One ``qbo_connections`` row with its tokens decrypted."""

    id: int
    organization_id: int
    realm_id: str
    environment: str
    base_url: str
    status: str
    status_reason: str | None
    token_version: int
    tokens: TokenSet | None


class ConnectionStore:
    """``qbo_connections`` with tokens encrypted by Fernet under ``BATCHLY_SECRET_KEY``."""

    def __init__(self, engine: Engine, secret_key: str) -> None:
        self.engine = engine
        self._fernet = Fernet(secret_key.encode())

    def save(
        self, organization_id: int, realm_id: str, environment: str, base_url: str, tokens: TokenSet
    ) -> ConnectionRecord:
        """Store a freshly authorised connection (insert, or replace the tokens of the same org and realm)."""
        c = qbo_connections.c
        values = {
            "environment": environment,
            "base_url": base_url,
            **self._token_values(tokens),
            "status": "connected",
            "status_reason": None,
            "updated_at": utcnow(),
        }
        with self.engine.begin() as conn:
            existing = conn.execute(
                sa.select(c.id)
                .where(c.organization_id == organization_id, c.realm_id == realm_id)
                .with_for_update()
            ).scalar()
            if existing is None:
                conn.execute(
                    sa.insert(qbo_connections).values(
                        organization_id=organization_id, realm_id=realm_id, token_version=1, **values
                    )
                )
            else:
                conn.execute(
                    sa.update(qbo_connections)
                    .where(c.id == existing)
                    .values(token_version=c.token_version + 1, **values)
                )
            return self._load(conn, organization_id, realm_id, lock=False)

    def load(self, organization_id: int, realm_id: str | None = None) -> ConnectionRecord:
        """The organisation's connection (the one for ``realm_id`` if given). Raises LookupError if there is none."""
        with self.engine.connect() as conn:
            return self._load(conn, organization_id, realm_id, lock=False)

    def _load(
        self, conn: Connection, organization_id: int, realm_id: str | None, *, lock: bool
    ) -> ConnectionRecord:
        c = qbo_connections.c
        query = sa.select(qbo_connections).where(c.organization_id == organization_id).order_by(c.id.desc())
        if realm_id is not None:
            query = query.where(c.realm_id == realm_id)
        if lock:
            query = query.with_for_update()
        row = conn.execute(query).mappings().first()
        if row is None:
            raise LookupError(
                f"organisation {organization_id} has no QuickBooks connection: "
                f"connect it with `batchly-sync connect --org {organization_id}`"
            )
        tokens = None
        if row["access_token_enc"] and row["refresh_token_enc"]:
            tokens = TokenSet(
                access_token=self._decrypt(row["access_token_enc"]),
                refresh_token=self._decrypt(row["refresh_token_enc"]),
                access_expires_at=row["access_token_expires_at"],
                refresh_expires_at=row["refresh_token_expires_at"],
            )
        return ConnectionRecord(
            id=row["id"],
            organization_id=row["organization_id"],
            realm_id=row["realm_id"],
            environment=row["environment"],
            base_url=row["base_url"],
            status=row["status"],
            status_reason=row["status_reason"],
            token_version=row["token_version"],
            tokens=tokens,
        )

    def refresh(
        self,
        organization_id: int,
        realm_id: str,
        rejected_access_token: str | None,
        oauth: OAuthClient,
        margin: timedelta,
    ) -> tuple[ConnectionRecord, bool]:
        """Make sure the stored access token is fresh and differs from ``rejected_access_token``.

        Runs under the row lock. When another process already refreshed (the stored token is a different, unexpired
        one), nothing is sent. Returns the row and whether the token endpoint was called. ``invalid_grant`` stores
        ``needs_reauth`` and raises :class:`ReauthorizationRequired`.
        """
        refused: ReauthorizationRequired | None = None
        with self.engine.begin() as conn:
            record = self._load(conn, organization_id, realm_id, lock=True)
            self._raise_if_unusable(record)
            assert record.tokens is not None
            current = record.tokens
            if (
                current.access_token != rejected_access_token
                and current.access_expires_at - margin > utcnow()
            ):
                return record, False
            try:
                tokens = oauth.refresh(current.refresh_token)
            except ReauthorizationRequired as exc:
                reason = (
                    f"QuickBooks refused the refresh token for realm {realm_id} ({exc.code}); "
                    f"{reauthorize_hint(organization_id)}"
                )
                self._set_status(conn, record.id, "needs_reauth", reason)
                refused = ReauthorizationRequired(reason, code=exc.code, status=exc.status)
            else:
                conn.execute(
                    sa.update(qbo_connections)
                    .where(qbo_connections.c.id == record.id)
                    .values(
                        token_version=qbo_connections.c.token_version + 1,
                        updated_at=utcnow(),
                        **self._token_values(tokens),
                    )
                )
                return self._load(conn, organization_id, realm_id, lock=False), True
        raise refused

    @staticmethod
    def _raise_if_unusable(record: ConnectionRecord) -> None:
        if record.status != "connected" or record.tokens is None:
            reason = record.status_reason or reauthorize_hint(record.organization_id)
            raise ReauthorizationRequired(
                f"QuickBooks connection of organisation {record.organization_id} (realm {record.realm_id}) is "
                f"{record.status}: {reason}",
                code=record.status,
            )

    @staticmethod
    def _set_status(conn: Connection, connection_id: int, status: str, reason: str) -> None:
        conn.execute(
            sa.update(qbo_connections)
            .where(qbo_connections.c.id == connection_id)
            .values(status=status, status_reason=reason[:1000], updated_at=utcnow())
        )

    def _token_values(self, tokens: TokenSet) -> dict[str, Any]:
        return {
            "access_token_enc": self._encrypt(tokens.access_token),
            "refresh_token_enc": self._encrypt(tokens.refresh_token),
            "access_token_expires_at": tokens.access_expires_at,
            "refresh_token_expires_at": tokens.refresh_expires_at,
        }

    def _encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def _decrypt(self, value: str) -> str:
        return self._fernet.decrypt(value.encode()).decode()


class RealmTokens:
    """Access tokens for one connection, refreshed ahead of expiry or after a 401, shared safely across processes."""

    def __init__(
        self,
        store: ConnectionStore,
        oauth: OAuthClient,
        organization_id: int,
        realm_id: str,
        refresh_margin: timedelta = timedelta(seconds=REFRESH_AHEAD_SECONDS),
        stats: ClientStats | None = None,
    ) -> None:
        self.store = store
        self.oauth = oauth
        self.organization_id = organization_id
        self.realm_id = realm_id
        self.refresh_margin = refresh_margin
        self.stats = stats or ClientStats()  # counts token endpoint calls as "token"
        self._lock = threading.Lock()
        self._record = store.load(organization_id, realm_id)
        ConnectionStore._raise_if_unusable(self._record)

    def __repr__(self) -> str:
        return f"RealmTokens(organization_id={self.organization_id}, realm_id={self.realm_id!r})"

    def access_token(self) -> str:
        """A bearer token that is not about to expire."""
        with self._lock:
            tokens = self._current()
            if tokens.access_expires_at - self.refresh_margin > utcnow():
                return tokens.access_token
        return self.refresh(tokens.access_token)

    def refresh(self, rejected_access_token: str) -> str:
        """A bearer token other than ``rejected_access_token`` (refreshing, or adopting another process's refresh)."""
        with self._lock:
            if self._current().access_token == rejected_access_token:
                self._record, called = self.store.refresh(
                    self.organization_id,
                    self.realm_id,
                    rejected_access_token,
                    self.oauth,
                    self.refresh_margin,
                )
                if called:
                    self.stats.count_call("token")
            return self._current().access_token

    def _current(self) -> TokenSet:
        ConnectionStore._raise_if_unusable(self._record)
        assert self._record.tokens is not None
        return self._record.tokens


@dataclass(frozen=True)
class AuthorizationCallback:
    """What Intuit sends to the redirect URI after consent."""

    code: str = field(repr=False)
    realm_id: str
    state: str


def connect_organization(
    engine: Engine,
    settings: Settings,
    organization_id: int,
    state: str,
    wait_for_callback: Callable[[str], AuthorizationCallback],
) -> ConnectionRecord:
    """The authorisation-code flow: ``wait_for_callback(url)`` shows the URL and returns the redirect's parameters.

    The ``state`` must come back unchanged (it ties the callback to this request); then the code is exchanged and
    the tokens are stored, replacing any earlier connection of this organisation to the same realm.
    """
    oauth = OAuthClient(settings)
    callback = wait_for_callback(oauth.authorization_url(state))
    if callback.state != state:
        raise AuthError("the authorisation callback's state does not match this request (possible CSRF)")
    if not callback.code or not callback.realm_id:
        raise AuthError("the authorisation callback has no code or realmId (was access denied?)")
    tokens = oauth.exchange_code(callback.code)
    store = ConnectionStore(engine, settings.secret_key)
    return store.save(
        organization_id, callback.realm_id, settings.qbo_environment, settings.qbo_base_url, tokens
    )


def client_for_organization(
    engine: Engine,
    settings: Settings,
    organization_id: int,
    *,
    realm_id: str | None = None,
    config: ClientConfig | None = None,
    limits: RateLimits | None = None,
    session: requests.Session | None = None,
) -> QuickBooksClient:
    """A client for the organisation's connected realm, with tokens and rate limits shared through ``engine``.

    Raises :class:`ReauthorizationRequired` (saying what to run) when the connection needs re-authorisation and
    ``LookupError`` when the organisation was never connected.
    """
    config = config or ClientConfig()
    limits = limits or RateLimits(time_scale=config.time_scale, concurrent=config.in_flight)
    store = ConnectionStore(engine, settings.secret_key)
    record = store.load(organization_id, realm_id)
    stats = ClientStats()
    tokens = RealmTokens(
        store,
        OAuthClient(settings, session),
        organization_id,
        record.realm_id,
        refresh_margin=timedelta(seconds=config.scaled(REFRESH_AHEAD_SECONDS)),
        stats=stats,
    )
    return QuickBooksClient(
        record.realm_id,
        record.base_url,
        tokens,
        limiter=DatabaseRateLimiter(engine, record.realm_id, limits),
        config=config,
        session=session,
        stats=stats,
    )
