"""QuickBooks clients for Batchly organisations: settings, stored connections, tokens and shared limits put together.

Refresh tokens rotate and the old one may stop working at once, so a refresh is treated as single-use and serialised
per realm across processes: inside :meth:`ConnectionStore.locked` (the row locked and re-read: another process may
have refreshed already, then its token is used) the token endpoint is called, the new pair is stored and committed,
and only then is the new access token used. ``invalid_grant`` marks the connection ``needs_reauth`` with a message
naming the command to run; other realms are untouched.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import requests

from batchly_pipelines.quickbooks.client import ClientConfig, ClientStats, QuickBooksClient
from batchly_pipelines.quickbooks.errors import AuthError, ReauthorizationRequired
from batchly_pipelines.quickbooks.oauth import (
    SANDBOX_AUTHORIZE_PATH,
    SANDBOX_TOKEN_PATH,
    AuthorizationCallback,
    OAuthClient,
    OAuthConfig,
)
from batchly_pipelines.quickbooks.ratelimit import RateLimits, SharedRateLimiter
from batchly_pipelines.services.read_budget import monthly_quota
from batchly_pipelines.settings import Settings
from batchly_pipelines.store.connections import ConnectionRecord, ConnectionStore, StoredTokens
from batchly_pipelines.store.db import Engine
from batchly_pipelines.store.rate_limits import DatabaseRateLedger
from batchly_pipelines.store.read_budget import DatabaseReadMeter

REFRESH_AHEAD_SECONDS = 300.0  # refresh this long before the access token expires (scaled by the time scale)


def reauthorize_hint(organization_id: int) -> str:
    """What an operator runs to connect a company again."""
    return f"re-authorise with `batchly-sync connect --org {organization_id}`"


def oauth_config(settings: Settings) -> OAuthConfig:
    """The app's OAuth settings: Intuit's endpoints, or in local mode the sandbox's (under ``QBO_BASE_URL``)."""
    config = OAuthConfig(settings.qbo_client_id, settings.qbo_client_secret, settings.qbo_redirect_uri)
    if settings.is_local:
        base = settings.qbo_base_url
        config = replace(
            config, authorize_url=base + SANDBOX_AUTHORIZE_PATH, token_url=base + SANDBOX_TOKEN_PATH
        )
    return config


def database_rate_limiter(
    engine: Engine, realm_id: str, limits: RateLimits | None = None
) -> SharedRateLimiter:
    """The realm's limiter, shared with every process through the Batchly database."""
    return SharedRateLimiter(DatabaseRateLedger(engine, realm_id), limits)


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
        _raise_if_unusable(self._record)

    def __repr__(self) -> str:
        return f"RealmTokens(organization_id={self.organization_id}, realm_id={self.realm_id!r})"

    def access_token(self) -> str:
        """A bearer token that is not about to expire."""
        with self._lock:
            tokens = self._current()
            if tokens.access_expires_at - self.refresh_margin > datetime.now(UTC):
                return tokens.access_token
        return self.refresh(tokens.access_token)

    def refresh(self, rejected_access_token: str) -> str:
        """A bearer token other than ``rejected_access_token`` (refreshing, or adopting another process's refresh)."""
        with self._lock:
            if self._current().access_token == rejected_access_token:
                self._record, called = self._refresh_stored(rejected_access_token)
                if called:
                    self.stats.count_call("token")
            return self._current().access_token

    def _refresh_stored(self, rejected_access_token: str) -> tuple[ConnectionRecord, bool]:
        """Make sure the stored access token is fresh and differs from ``rejected_access_token``.

        Runs under the row lock. When another process already refreshed (the stored token is a different, unexpired
        one), nothing is sent. Returns the row and whether the token endpoint was called. ``invalid_grant`` stores
        ``needs_reauth`` and raises :class:`ReauthorizationRequired`.
        """
        with self.store.locked(self.organization_id, self.realm_id) as row:
            _raise_if_unusable(row.record)
            assert row.record.tokens is not None
            current = row.record.tokens
            if (
                current.access_token != rejected_access_token
                and current.access_expires_at - self.refresh_margin > datetime.now(UTC)
            ):
                return row.record, False
            try:
                tokens = self.oauth.refresh(current.refresh_token)
            except ReauthorizationRequired as exc:
                reason = (
                    f"QuickBooks refused the refresh token for realm {self.realm_id} ({exc.code}); "
                    f"{reauthorize_hint(self.organization_id)}"
                )
                row.set_status("needs_reauth", reason)
                refused = ReauthorizationRequired(reason, code=exc.code, status=exc.status)
            else:
                return row.replace_tokens(tokens), True
        raise refused  # after the block, so that needs_reauth is committed

    def _current(self) -> StoredTokens:
        _raise_if_unusable(self._record)
        assert self._record.tokens is not None
        return self._record.tokens


def _raise_if_unusable(record: ConnectionRecord) -> None:
    if record.status != "connected" or record.tokens is None:
        reason = record.status_reason or reauthorize_hint(record.organization_id)
        raise ReauthorizationRequired(
            f"the QuickBooks connection of organisation {record.organization_id} (company {record.realm_id}) needs "
            f"a person ({record.status.replace('_', ' ')}): {reason}",
            code=record.status,
        )


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
    oauth = OAuthClient(oauth_config(settings))
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
    """A client for the organisation's connected realm, with tokens and rate limits shared through ``engine``; its
    reads are counted against the app's monthly read budget (``store.read_budget``).

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
        OAuthClient(oauth_config(settings), session),
        organization_id,
        record.realm_id,
        refresh_margin=timedelta(seconds=config.scaled(REFRESH_AHEAD_SECONDS)),
        stats=stats,
    )
    return QuickBooksClient(
        record.realm_id,
        record.base_url,
        tokens,
        limiter=database_rate_limiter(engine, record.realm_id, limits),
        config=config,
        session=session,
        stats=stats,
        read_meter=DatabaseReadMeter(engine, settings.qbo_client_id, record.realm_id, quota=monthly_quota()),
    )
