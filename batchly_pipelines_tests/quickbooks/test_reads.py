"""Reads against the sandbox: paging to exhaustion, CDC past its cap, reads by id."""

from __future__ import annotations

from datetime import datetime, timedelta

from batchly_pipelines.quickbooks import query as q
from batchly_pipelines.quickbooks.client import ClientConfig, QuickBooksClient
from batchly_pipelines_tests.support.quickbooks import TIME_SCALE, SandboxTokens
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxServer


def _seed(sandbox: SandboxServer, realm_id: str, **counts: int) -> dict[str, list[str]]:
    plan = {"customers": 0, "items": 0, "invoices": 0, "payments": 0, "days": 5, **counts}
    return SandboxAdmin(sandbox.base_url).seed(realm_id, **plan)


def _server_now(client: QuickBooksClient) -> datetime:
    page = client.query("SELECT COUNT(*) FROM Account")
    assert page.server_time is not None
    return page.server_time


def test_query_all_pages_to_exhaustion(
    sandbox: SandboxServer, realm_id: str, client: QuickBooksClient
) -> None:
    created = _seed(sandbox, realm_id, customers=2500)
    rows = list(client.query_all("Customer"))
    assert len(rows) == 2500 and {r["Id"] for r in rows} == set(created["Customer"])
    assert [int(r["Id"]) for r in rows] == sorted(int(r["Id"]) for r in rows)
    assert client.stats.calls["query"] == 3  # 1000 + 1000 + 500
    assert client.count("Customer") == 2500


def test_read_many_chunks_and_sees_inactive(sandbox: SandboxServer, realm_id: str) -> None:
    ids = _seed(sandbox, realm_id, customers=250)["Customer"]
    SandboxAdmin(sandbox.base_url).action(realm_id, "deactivate", id=ids[7])
    config = ClientConfig(time_scale=TIME_SCALE, read_chunk=100)
    with QuickBooksClient(
        realm_id, sandbox.base_url, SandboxTokens(sandbox.base_url, realm_id), config=config
    ) as qbo:
        found = qbo.read_many("Customer", [*ids, ids[0], "999999"])
        assert qbo.stats.calls["query"] == 3  # 251 distinct ids in chunks of 100
        assert qbo.read("Customer", ids[7])["Id"] == ids[7]
    assert sorted(r["Id"] for r in found) == sorted(ids)
    assert next(r for r in found if r["Id"] == ids[7])["Active"] is False


def test_cdc_splits_past_the_cap_and_reports_deletions(
    sandbox: SandboxServer, realm_id: str, client: QuickBooksClient
) -> None:
    created = _seed(sandbox, realm_id, customers=1300, items=40, invoices=400, payments=120, days=5)
    payments = created["Payment"]
    SandboxAdmin(sandbox.base_url).action(realm_id, "delete_payment", payment_id=payments[-1])
    since = _server_now(client) - timedelta(days=6)

    result = client.cdc(["Customer", "Item", "Invoice", "Payment"], since)
    assert {o["Id"] for o in result.objects["Customer"]} == set(created["Customer"])
    assert {o["Id"] for o in result.objects["Invoice"]} == set(created["Invoice"])
    assert len(result.objects["Item"]) == 40
    assert payments[-1] in result.deleted_ids("Payment")
    assert result.calls >= 3  # saturated: split the entities, then walk the single saturated entity forward
    for rows in result.objects.values():
        assert len({o["Id"] for o in rows}) == len(rows)

    small = client.cdc(["Item"], since)
    assert small.calls == 1 and len(small.objects["Item"]) == 40
    assert small.high_water_mark <= _server_now(client) - client.config.safety_lag + timedelta(seconds=1)


def test_query_pages_by_explicit_order(
    sandbox: SandboxServer, realm_id: str, client: QuickBooksClient
) -> None:
    _seed(sandbox, realm_id, customers=30)
    names = [c["DisplayName"] for c in client.query_all("Customer", order_by="DisplayName DESC")]
    assert names == sorted(names, reverse=True)
    active = client.count("Customer", [q.condition("Active", "=", True)])
    assert active == 30
