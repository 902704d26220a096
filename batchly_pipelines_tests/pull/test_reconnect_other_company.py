"""An organisation with nothing linked yet re-authorised to another QuickBooks company: the new connection replaces
the old one, and with it goes everything Batchly kept of the old company — pull cursors, mirror rows, reconciled
versions, open link reviews, pull errors, the webhook repair state of a realm nobody is connected to any more — so
the new company is pulled from the start and nothing of the old one is ever linked into it."""

from __future__ import annotations

import sqlalchemy as sa
from cryptography.fernet import Fernet

from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.quickbooks.oauth import TokenSet
from batchly_pipelines.services.pull.organization import pull_organization, window_since_cursor
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.connections import ConnectionStore
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines.store.webhook_repair import realm_repairs, save_sweep
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.pull import Company
from batchly_pipelines_tests.support.quickbooks import SandboxTokens
from batchly_pipelines_tests.support.sandbox_client import Qbo


def _count(company: Company, table: sa.Table) -> int:
    with company.engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(table).where(table.c.organization_id == company.org)
        return int(conn.execute(query).scalar_one())


def test_switching_to_another_company_with_nothing_linked_forgets_the_old_one(company: Company) -> None:
    store = ConnectionStore(company.engine, Fernet.generate_key().decode())
    with (
        company.engine.begin() as conn
    ):  # same name, other e-mail: the old company's customer waits for review
        f.customer(conn, company.org, display_name="Ada Lovelace", email="ada@batchly.example")
    company.qbo.customer("Ada Lovelace", PrimaryEmailAddr={"Address": "ada@old.example"})
    other = Qbo(company.sandbox)  # the company the accountant meant: it has customers already
    other.customer("Grace Hopper")
    old = company.qbo.realm_id
    store.save(
        company.org,
        old,
        "local",
        company.sandbox.base_url,
        TokenSet.from_response(company.qbo.admin.tokens(old)),
    )
    with company.engine.begin() as conn:
        save_sweep(conn, old, utcnow(), utcnow(), 0)
    with company.qbo.admin.clock_advanced(5 * 60):
        # the first pull sets every cursor to the old company's clock (its records are all older than that)
        pull_organization(
            company.engine, company.client, company.org, window_since_cursor(company.engine, company.org)
        )
        assert (
            _count(company, s.sync_cursors)
            and _count(company, s.qbo_mirror)
            and _count(company, s.qbo_reconciled)
        )
        assert _count(company, s.sync_conflicts) == 1  # the link review of Ada
        assert _count(company, s.qbo_sync_state) == 0  # nothing linked: the switch is allowed

        record = store.save(
            company.org,
            other.realm_id,
            "local",
            company.sandbox.base_url,
            TokenSet.from_response(other.admin.tokens(other.realm_id)),
        )

        for table in (s.sync_cursors, s.qbo_mirror, s.qbo_reconciled, s.sync_conflicts):
            assert _count(company, table) == 0, table.name
        with company.engine.connect() as conn:
            assert realm_repairs(conn, [old]) == {}
        window = window_since_cursor(company.engine, company.org)
        client = QuickBooksClient(
            other.realm_id, company.sandbox.base_url, SandboxTokens(company.sandbox.base_url, other.realm_id)
        )
        with client:
            pull_organization(company.engine, client, company.org, window)
    names = {row["display_name"] for row in company.rows(s.customers)}
    assert "Grace Hopper" in names, f"the new company's customer was never pulled (window {window})"
    with company.engine.connect() as conn:
        mirrored = conn.execute(
            sa.select(s.qbo_mirror.c.data).where(s.qbo_mirror.c.entity_type == "Customer")
        )
        assert {row.data["DisplayName"] for row in mirrored} == {"Grace Hopper"}
    # what was cleared is said (batchly-sync connect prints it)
    assert record.realm_id == other.realm_id and record.replaced == (old,)
    assert record.cleared["qbo_connections"] == 1
    assert record.cleared["sync_cursors"] >= 1 and record.cleared["qbo_mirror"] >= 1
    assert record.cleared["qbo_reconciled"] >= 1
    assert record.cleared["sync_conflicts (open)"] == 1
    assert record.cleared["qbo_webhook_realms"] == 1


def test_a_new_token_for_the_same_company_clears_nothing(company: Company) -> None:
    store = ConnectionStore(company.engine, Fernet.generate_key().decode())
    realm = company.qbo.realm_id
    tokens = TokenSet.from_response(company.qbo.admin.tokens(realm))
    store.save(company.org, realm, "local", company.sandbox.base_url, tokens)
    company.pull()
    cursors = _count(company, s.sync_cursors)
    assert cursors

    record = store.save(company.org, realm, "local", company.sandbox.base_url, tokens)

    assert (record.replaced, dict(record.cleared)) == ((), {})
    assert _count(company, s.sync_cursors) == cursors
