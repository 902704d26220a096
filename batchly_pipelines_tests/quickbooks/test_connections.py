"""Connections and tokens on SQLite and PostgreSQL against the sandbox's OAuth server: connect, encrypt, refresh,
rotate, serialise across processes, survive a lost answer, isolate a refused realm."""

from __future__ import annotations

import contextlib
import multiprocessing
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.engine import Engine

from batchly_pipelines.cli import main as cli
from batchly_pipelines.quickbooks.client import ClientConfig
from batchly_pipelines.quickbooks.errors import ReauthorizationRequired, ServerError
from batchly_pipelines.quickbooks.oauth import TokenSet
from batchly_pipelines.services.connections import client_for_organization
from batchly_pipelines.settings import Settings
from batchly_pipelines.store.connections import ConnectionStore
from batchly_pipelines.store.schema import organizations, qbo_connections, utcnow
from batchly_pipelines_tests.support import workers
from batchly_pipelines_tests.support.quickbooks import TIME_SCALE
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxConfig, SandboxServer

CONFIG = ClientConfig(time_scale=TIME_SCALE)


def _organization(engine: Engine, name: str = "Acme") -> int:
    with engine.begin() as conn:
        key = conn.execute(sa.insert(organizations).values(name=name)).inserted_primary_key
    assert key is not None
    return int(key[0])


def _connect(
    engine: Engine, settings: Settings, base_url: str, realm_id: str, *, expired: bool = False, **changes: Any
) -> tuple[int, TokenSet]:
    """An organisation connected to ``realm_id`` with a token pair minted by the sandbox."""
    org = _organization(engine)
    tokens = TokenSet.from_response(SandboxAdmin(base_url).tokens(realm_id))
    if expired:
        changes["access_expires_at"] = utcnow() - timedelta(seconds=1)
    tokens = replace(tokens, **changes)
    ConnectionStore(engine, settings.secret_key).save(org, realm_id, "local", base_url, tokens)
    return org, tokens


def _row(engine: Engine, org: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.select(qbo_connections).where(qbo_connections.c.organization_id == org)).one()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_connect_command_runs_the_authorisation_flow(
    engine: Engine,
    sandbox: SandboxServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    org = _organization(engine)
    key = Fernet.generate_key().decode()
    env = {
        "QBO_ENVIRONMENT": "local",
        "QBO_BASE_URL": sandbox.base_url,
        "QBO_REDIRECT_URI": f"http://127.0.0.1:{_free_port()}/callback",
        "BATCHLY_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "BATCHLY_SECRET_KEY": key,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["connect", "--org", str(org), "--timeout", "20"]) == 0
    out = capsys.readouterr().out
    assert (
        "/connect/oauth2?client_id=" in out and "local mode" in out and f"organisation {org} connected" in out
    )

    row = _row(engine, org)
    assert row.status == "connected" and row.token_version == 1
    access = Fernet(key.encode()).decrypt(row.access_token_enc.encode()).decode()
    assert access not in out and access not in row.access_token_enc
    answer = requests.get(
        f"{sandbox.base_url}/v3/company/{row.realm_id}/companyinfo/{row.realm_id}",
        headers={"Authorization": f"Bearer {access}", "Accept": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 200
    assert cli.main(["connect", "--org", "999999"]) == 1


def test_tokens_are_encrypted_at_rest_and_never_shown(
    engine: Engine, settings: Settings, sandbox: SandboxServer, realm_id: str
) -> None:
    org, tokens = _connect(engine, settings, sandbox.base_url, realm_id)
    row = _row(engine, org)
    stored = " ".join(str(value) for value in row)
    assert tokens.access_token not in stored and tokens.refresh_token not in stored
    with client_for_organization(engine, settings, org, config=CONFIG) as qbo:
        shown = " ".join(
            repr(x) for x in (qbo, qbo.tokens, tokens, ConnectionStore(engine, settings.secret_key).load(org))
        )
        assert qbo.count("Account") > 0
    assert tokens.access_token not in shown and tokens.refresh_token not in shown


def test_refresh_ahead_of_expiry_rotates_and_persists_first(
    engine: Engine, settings: Settings, sandbox: SandboxServer, realm_id: str
) -> None:
    org, old = _connect(engine, settings, sandbox.base_url, realm_id, expired=True)
    with client_for_organization(engine, settings, org, config=CONFIG) as qbo:
        assert qbo.count("Account") > 0
    row = _row(engine, org)
    assert row.token_version == 2 and row.status == "connected"
    assert SandboxAdmin(sandbox.base_url).counter(realm_id, "token_refreshes") == 1
    # The rotated-out refresh token is dead: only the stored one can continue.
    refused = requests.post(
        f"{sandbox.base_url}/oauth2/v1/tokens/bearer",
        data={"grant_type": "refresh_token", "refresh_token": old.refresh_token},
        auth=(settings.qbo_client_id, settings.qbo_client_secret),
        timeout=10,
    )
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    with client_for_organization(engine, settings, org, config=CONFIG) as qbo:
        assert qbo.count("Account") > 0  # the persisted access token works without another refresh
    assert SandboxAdmin(sandbox.base_url).counter(realm_id, "token_refreshes") == 1


def test_the_token_store_records_the_hard_expiry_intuit_returns_and_keeps_it_across_refreshes(
    engine: Engine, settings: Settings, sandbox: SandboxServer, realm_id: str
) -> None:
    before = utcnow()
    org, tokens = _connect(engine, settings, sandbox.base_url, realm_id, expired=True)
    assert tokens.refresh_hard_expires_at is not None
    cap = timedelta(seconds=5 * 365 * 86400 / TIME_SCALE)  # the sandbox's 5 years, compressed
    assert before + cap - timedelta(seconds=5) <= tokens.refresh_hard_expires_at <= utcnow() + cap
    assert _row(engine, org).refresh_token_hard_expires_at == tokens.refresh_hard_expires_at
    with client_for_organization(
        engine, settings, org, config=CONFIG
    ) as qbo:  # refreshes: same grant, same cap
        assert qbo.count("Account") > 0
    row = _row(engine, org)
    assert row.token_version == 2
    assert abs(row.refresh_token_hard_expires_at - tokens.refresh_hard_expires_at) < timedelta(seconds=2)
    stored = ConnectionStore(engine, settings.secret_key).load(org).tokens
    assert stored is not None and stored.refresh_hard_expires_at == row.refresh_token_hard_expires_at


def test_a_token_answer_without_a_hard_expiry_leaves_it_unknown() -> None:
    tokens = TokenSet.from_response(
        {"access_token": "a", "refresh_token": "r", "x_refresh_token_expires_in": 10}
    )
    assert tokens.refresh_hard_expires_at is None and tokens.refresh_expires_at is not None


def test_401_refreshes_once_and_retries(
    engine: Engine, settings: Settings, sandbox: SandboxServer, realm_id: str
) -> None:
    org, _ = _connect(
        engine, settings, sandbox.base_url, realm_id, access_token="not-a-token-the-server-knows"
    )
    with client_for_organization(engine, settings, org, config=CONFIG) as qbo:
        assert qbo.count("Account") > 0
        assert qbo.stats.calls["query"] == 2
    assert SandboxAdmin(sandbox.base_url).counter(realm_id, "token_refreshes") == 1
    assert _row(engine, org).token_version == 2


def test_eight_processes_refresh_with_one_token_call(
    engine: Engine, settings: Settings, sandbox: SandboxServer, realm_id: str
) -> None:
    org, _ = _connect(engine, settings, sandbox.base_url, realm_id, expired=True)
    before = SandboxAdmin(sandbox.base_url).counter("global", "token_endpoint_calls")
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(8), context.Queue()
    url = engine.url.render_as_string(hide_password=False)
    processes = [
        context.Process(target=workers.refresh_and_count, args=(url, settings, org, barrier, results))
        for _ in range(8)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert [o[0] for o in outcomes] == ["ok"] * 8, outcomes
    assert sorted(o[2] for o in outcomes) == [0] * 7 + [1]  # exactly one process refreshed, seven adopted
    assert SandboxAdmin(sandbox.base_url).counter("global", "token_endpoint_calls") - before == 1
    assert _row(engine, org).token_version == 2


class _DropFirstTokenAnswer:
    """An HTTP proxy to the sandbox that loses the first token-endpoint answer after the sandbox has acted on it."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.dropped = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
                }
                answer = requests.post(proxy.target + self.path, data=body, headers=headers, timeout=10)
                if self.path.startswith("/oauth2/") and proxy.dropped == 0:
                    proxy.dropped += 1
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @contextlib.contextmanager
    def running(self) -> Iterator[_DropFirstTokenAnswer]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()


@pytest.mark.parametrize("grace_seconds", [0.0, 600.0])
def test_lost_refresh_answer_recovers_or_asks_for_reauthorisation(
    engine: Engine, settings: Settings, grace_seconds: float
) -> None:
    config = SandboxConfig(time_scale=TIME_SCALE, refresh_grace_seconds=grace_seconds)
    with SandboxServer(config) as sandbox, _DropFirstTokenAnswer(sandbox.base_url).running() as proxy:
        realm = SandboxAdmin(sandbox.base_url).new_realm()
        org, _ = _connect(engine, settings, sandbox.base_url, realm, expired=True)
        via_proxy = replace(
            settings, qbo_base_url=proxy.url
        )  # the token endpoint is reached through the proxy

        if grace_seconds:  # Intuit answers the retried refresh with the same new pair: nothing is lost
            with client_for_organization(engine, via_proxy, org, config=CONFIG) as qbo:
                assert qbo.count("Account") > 0
            assert _row(engine, org).status == "connected"
            return

        with (
            client_for_organization(engine, via_proxy, org, config=CONFIG) as qbo,
            pytest.raises(ReauthorizationRequired) as caught,
        ):
            qbo.count("Account")
        assert proxy.dropped == 1
        assert f"batchly-sync connect --org {org}" in str(caught.value)
        row = _row(engine, org)
        assert row.status == "needs_reauth" and f"--org {org}" in row.status_reason
        calls = SandboxAdmin(sandbox.base_url).counter("global", "token_endpoint_calls")
        assert calls == 2  # the lost one and its retry: then it stops
        for _ in range(3):  # no crash loop: later runs stop at once, without calling Intuit again
            with pytest.raises(ReauthorizationRequired, match="re-authorise with"):
                client_for_organization(engine, via_proxy, org, config=CONFIG)
        assert SandboxAdmin(sandbox.base_url).counter("global", "token_endpoint_calls") == calls


def test_invalid_grant_stops_one_realm_and_not_the_other(
    engine: Engine, settings: Settings, sandbox: SandboxServer
) -> None:
    realms = [SandboxAdmin(sandbox.base_url).new_realm() for _ in range(2)]
    (refused_org, refused), (fine_org, _) = (
        _connect(engine, settings, sandbox.base_url, realm, expired=True) for realm in realms
    )
    revoked = requests.post(
        f"{sandbox.base_url}/oauth2/v1/tokens/revoke",
        json={"token": refused.refresh_token},
        auth=(settings.qbo_client_id, settings.qbo_client_secret),
        timeout=10,
    )
    assert revoked.status_code == 200
    with (
        client_for_organization(engine, settings, refused_org, config=CONFIG) as qbo,
        pytest.raises(ReauthorizationRequired, match=f"connect --org {refused_org}"),
    ):
        qbo.count("Account")
    with client_for_organization(engine, settings, fine_org, config=CONFIG) as qbo:
        assert qbo.count("Account") > 0
    assert _row(engine, refused_org).status == "needs_reauth"
    assert _row(engine, fine_org).status == "connected"


def test_unreachable_token_endpoint_is_transient_not_reauth(
    engine: Engine, settings: Settings, sandbox: SandboxServer, realm_id: str
) -> None:
    org, _ = _connect(engine, settings, sandbox.base_url, realm_id, expired=True)
    nowhere = replace(settings, qbo_base_url=f"http://127.0.0.1:{_free_port()}")
    with client_for_organization(engine, nowhere, org, config=CONFIG) as qbo, pytest.raises(ServerError):
        qbo.count("Account")
    assert _row(engine, org).status == "connected"  # the refresh token was never spent
    with client_for_organization(engine, settings, org, config=CONFIG) as qbo:
        assert qbo.count("Account") > 0
