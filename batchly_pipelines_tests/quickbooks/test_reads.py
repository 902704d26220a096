"""Reads against the sandbox: paging to exhaustion, windowed incremental reads, CDC past its cap, reads by id."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from batchly_pipelines.quickbooks import query as q
from batchly_pipelines.quickbooks.client import ClientConfig, QueryPage, QuickBooksClient, WriteOp
from batchly_pipelines_tests.quickbooks.helpers import TIME_SCALE, SandboxTokens, admin
from qbo_sandbox.server import SandboxServer


def _seed(sandbox: SandboxServer, realm_id: str, **counts: int) -> dict[str, list[str]]:
    plan = {"customers": 0, "items": 0, "invoices": 0, "payments": 0, "days": 5, **counts}
    return dict(admin(sandbox.base_url, f"realms/{realm_id}/seed", plan)["created"])


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
    admin(sandbox.base_url, f"realms/{realm_id}/actions", {"action": "deactivate", "id": ids[7]})
    config = ClientConfig(time_scale=TIME_SCALE, read_chunk=100)
    with QuickBooksClient(
        realm_id, sandbox.base_url, SandboxTokens(sandbox.base_url, realm_id), config=config
    ) as qbo:
        found = qbo.read_many("Customer", [*ids, ids[0], "999999"])
        assert qbo.stats.calls["query"] == 3  # 251 distinct ids in chunks of 100
        assert qbo.read("Customer", ids[7])["Id"] == ids[7]
    assert sorted(r["Id"] for r in found) == sorted(ids)
    assert next(r for r in found if r["Id"] == ids[7])["Active"] is False


def test_changed_between_windows_partition_changes(
    sandbox: SandboxServer, realm_id: str, client: QuickBooksClient
) -> None:
    # Every write lands in the same second, the case where a ">" cursor loses rows and ">=" repeats them.
    admin(sandbox.base_url, f"realms/{realm_id}/faults", {"same_second": True})
    ops = [WriteOp(i, "Customer", "create", {"DisplayName": f"Window {i}"}, f"w-{i}") for i in range(1205)]
    results = client.write_batch(ops)
    assert all(r.ok for r in results)
    ids = [r.entity_obj["Id"] for r in results if r.entity_obj]
    admin(sandbox.base_url, f"realms/{realm_id}/actions", {"action": "deactivate", "id": ids[3]})
    stamp = datetime.fromisoformat(results[0].entity_obj["MetaData"]["LastUpdatedTime"])  # type: ignore[index]

    whole = client.changed_between("Customer", stamp - timedelta(hours=1), stamp + timedelta(hours=1))
    assert len(whole.objects) == 1205 and len({o["Id"] for o in whole.objects}) == 1205
    deactivated = next(o for o in whole.objects if o["Id"] == ids[3])
    assert deactivated["Active"] is False and deactivated["SyncToken"] == "1"
    assert whole.calls >= 3  # two pages and the re-check count
    server_now = _server_now(client)
    assert whole.high_water_mark <= server_now - client.config.safety_lag + timedelta(seconds=1)

    first = client.changed_between("Customer", stamp - timedelta(hours=1), stamp)
    second = client.changed_between("Customer", stamp, stamp + timedelta(seconds=1))
    third = client.changed_between("Customer", stamp + timedelta(seconds=1), stamp + timedelta(hours=1))
    assert first.objects == [] and third.objects == []
    assert {o["Id"] for o in second.objects} == set(ids)
    assert second.high_water_mark <= stamp + timedelta(seconds=1)


def test_high_water_mark_follows_the_server_clock_not_ours(
    sandbox: SandboxServer, realm_id: str, client: QuickBooksClient
) -> None:
    # The sandbox's clock runs a day behind this machine: the mark must not run ahead of the server.
    admin(sandbox.base_url, "clock", {"advance_seconds": -86400})
    try:
        window = client.changed_between(
            "Customer", datetime.now(UTC) - timedelta(days=3), datetime.now(UTC) + timedelta(days=1)
        )
    finally:
        admin(sandbox.base_url, "clock", {"advance_seconds": 86400})
    assert window.high_water_mark < datetime.now(UTC) - timedelta(hours=23)


def test_cdc_splits_past_the_cap_and_reports_deletions(
    sandbox: SandboxServer, realm_id: str, client: QuickBooksClient
) -> None:
    created = _seed(sandbox, realm_id, customers=1300, items=40, invoices=400, payments=120, days=5)
    payments = created["Payment"]
    admin(
        sandbox.base_url,
        f"realms/{realm_id}/actions",
        {"action": "delete_payment", "payment_id": payments[-1]},
    )
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


class _EditsDuringTheScan(QuickBooksClient):
    """Lets the accountant edit records right after the first page of a window was read (rows shift mid-scan)."""

    def __init__(self, *args: Any, edit: Callable[[list[dict[str, Any]]], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.edit: Callable[[list[dict[str, Any]]], None] | None = edit

    def query(self, statement: str) -> QueryPage:
        page = super().query(statement)
        if self.edit is not None and len(page.rows) == q.MAX_RESULTS:
            edit, self.edit = self.edit, None
            edit(page.rows)
        return page


def test_rows_edited_mid_scan_do_not_hide_unseen_rows(sandbox: SandboxServer, realm_id: str) -> None:
    ids = _seed(sandbox, realm_id, customers=2500, days=5)["Customer"]

    def deactivate_early_rows(first_page: list[dict[str, Any]]) -> None:
        for obj in first_page[:60]:  # they move to "now", out of the window, shifting every later row forward
            admin(sandbox.base_url, f"realms/{realm_id}/actions", {"action": "deactivate", "id": obj["Id"]})

    tokens = SandboxTokens(sandbox.base_url, realm_id)
    with _EditsDuringTheScan(realm_id, sandbox.base_url, tokens, edit=deactivate_early_rows) as qbo:
        server_now = _server_now(qbo)
        window = qbo.changed_between(
            "Customer", server_now - timedelta(days=6), server_now - timedelta(minutes=1)
        )
    assert qbo.edit is None  # the edit happened
    assert sorted(o["Id"] for o in window.objects) == sorted(ids)
