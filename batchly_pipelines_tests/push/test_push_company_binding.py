"""One company per connection: a reconnect that lands on another QuickBooks company is refused once records are
linked, switching is an explicit command that says what it unlinked, and local organisations never share a company
(issue 14, failure 2)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from cryptography.fernet import Fernet
from sqlalchemy.engine import Engine

from batchly_pipelines.cli import main as cli
from batchly_pipelines.quickbooks.oauth import TokenSet
from batchly_pipelines.services.push.organization import PushStats
from batchly_pipelines.settings import Settings
from batchly_pipelines.store.connections import CompanyMismatch, ConnectionStore
from batchly_pipelines_tests.push.test_push_resilience import _demo_into
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.push import Books
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxServer


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_reconnect_to_another_company_is_refused_once_records_are_linked(
    engine: Engine,
    settings: Settings,
    sandbox: SandboxServer,
    org: int,
    push: Callable[..., PushStats],
    books: Books,
) -> None:
    _demo_into(engine, org, 5)
    push()
    assert len(books.objects("Invoice")) == 5
    admin = SandboxAdmin(sandbox.base_url)
    other = admin.new_realm("Somebody else's books")
    store = ConnectionStore(engine, settings.secret_key)
    with pytest.raises(
        CompanyMismatch, match=rf"bound to QuickBooks company {books.realm_id}.*--switch-company"
    ):
        store.save(org, other, "local", sandbox.base_url, TokenSet.from_response(admin.tokens(other)))
    assert store.load(org).realm_id == books.realm_id  # the connection in use is still the organisation's own


def test_local_organisations_get_a_company_each_and_switching_is_explicit(
    engine: Engine,
    sandbox: SandboxServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with engine.begin() as conn:
        first, second = f.organization(conn, "First Ltd"), f.organization(conn, "Second Ltd")
        f.customer(conn, first, display_name="Linked Customer", qbo_id="1")
    for name, value in {
        "QBO_ENVIRONMENT": "local",
        "QBO_BASE_URL": sandbox.base_url,
        "QBO_REDIRECT_URI": f"http://127.0.0.1:{_free_port()}/callback",
        "BATCHLY_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "BATCHLY_SECRET_KEY": Fernet.generate_key().decode(),
    }.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["connect", "--org", str(first), "--timeout", "20"]) == 0
    assert cli.main(["connect", "--org", str(second), "--timeout", "20"]) == 0
    settings = Settings.from_env()
    store = ConnectionStore(engine, settings.secret_key)
    realm_first, realm_second = store.load(first).realm_id, store.load(second).realm_id
    assert realm_first != realm_second
    assert cli.main(["connect", "--org", str(first), "--timeout", "20"]) == 0  # a reconnect keeps its company
    assert store.load(first).realm_id == realm_first
    capsys.readouterr()

    # picking the other organisation's company is refused: the first one has a linked record
    assert cli.main(["connect", "--org", str(first), "--realm", realm_second, "--timeout", "20"]) == 1
    assert "bound to QuickBooks company" in capsys.readouterr().err
    assert store.load(first).realm_id == realm_first
    # switching is explicit and says what it unlinked
    assert (
        cli.main(
            ["connect", "--org", str(first), "--realm", realm_second, "--switch-company", "--timeout", "20"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "unlinked" in out and "1 customers.qbo_id" in out
    assert store.load(first).realm_id == realm_second
