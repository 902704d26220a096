"""Batched, idempotent writes against the sandbox: chunking, per-item mapping, replays, voids, stale objects, and 3,000
invoices through dropped connections and 503s landing exactly once."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import ClientConfig, QuickBooksClient, WriteOp
from batchly_pipelines.quickbooks.errors import StaleObjectError
from batchly_pipelines.quickbooks.ratelimit import RateLimits
from batchly_pipelines.quickbooks.wire import request_id
from batchly_pipelines.services.connections import database_rate_limiter
from batchly_pipelines_tests.support.quickbooks import TIME_SCALE, SandboxTokens
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxServer


def _customer_and_item(client: QuickBooksClient) -> tuple[str, str]:
    account = next(client.query_all("Account", ["AccountType = 'Income'"]))
    results = client.write_batch(
        [
            WriteOp("c", "Customer", "create", {"DisplayName": "Invoice Target"}, "setup-c"),
            WriteOp(
                "i",
                "Item",
                "create",
                {
                    "Name": "Widget",
                    "Type": "Service",
                    "UnitPrice": Decimal("12.50"),
                    "IncomeAccountRef": {"value": account["Id"]},
                },
                "setup-i",
            ),
        ]
    )
    assert all(r.ok and r.entity_obj for r in results), results
    return results[0].entity_obj["Id"], results[1].entity_obj["Id"]  # type: ignore[index]


def invoice_op(key: int, customer_id: str, item_id: str) -> WriteOp:
    """An invoice create for the caller's record ``key`` (its DocNumber names the key)."""
    body: dict[str, Any] = {
        "DocNumber": f"INV-{key:05d}",
        "CustomerRef": {"value": customer_id},
        "Line": [
            {
                "DetailType": "SalesItemLineDetail",
                "Amount": Decimal("25.00"),
                "SalesItemLineDetail": {
                    "ItemRef": {"value": item_id},
                    "Qty": Decimal(2),
                    "UnitPrice": Decimal("12.50"),
                },
            }
        ],
    }
    return WriteOp(key, "Invoice", "create", body, request_id("create", "Invoice", key, 1))


def test_batches_of_thirty_map_results_to_keys(client: QuickBooksClient) -> None:
    ops = [
        WriteOp(f"cust-{i}", "Customer", "create", {"DisplayName": f"Mapped {i}"}, f"m-{i}")
        for i in range(75)
    ]
    results = client.write_batch(ops)
    assert client.stats.calls["batch"] == 3 and client.stats.calls.get("write", 0) == 0
    assert [r.key for r in results] == [op.key for op in ops]
    for op, result in zip(ops, results, strict=True):
        assert result.ok and result.entity_obj is not None
        assert result.entity_obj["DisplayName"] == op.body["DisplayName"]

    with pytest.raises(ValueError, match="own key"):
        client.write_batch([ops[0], ops[0]])
    with pytest.raises(ValueError, match="requestid"):
        client.write_batch([WriteOp("x", "Customer", "create", {}, "r" * 51)])


def test_a_repeated_batch_is_replayed_not_written_twice(
    sandbox: SandboxServer, realm_id: str, client: QuickBooksClient
) -> None:
    ops = [WriteOp(i, "Customer", "create", {"DisplayName": f"Once {i}"}, f"once-{i}") for i in range(40)]
    first = client.write_batch(ops)
    again = client.write_batch(ops)
    assert [r.entity_obj["Id"] for r in first] == [r.entity_obj["Id"] for r in again]  # type: ignore[index]
    assert client.count("Customer") == 40
    assert SandboxAdmin(sandbox.base_url).counter(realm_id, "replays") == 2


def test_updates_are_sparse_and_stale_ones_come_back_with_the_current_object(
    client: QuickBooksClient,
) -> None:
    created = client.write_batch(
        [WriteOp("c", "Customer", "create", {"DisplayName": "Sparse Co", "Notes": "keep me"}, "s-1")]
    )[0].entity_obj
    assert created is not None
    update = WriteOp(
        "c", "Customer", "update", {"Id": created["Id"], "SyncToken": "0", "CompanyName": "Sparse"}, "s-2"
    )
    updated = client.write_batch([update])[0]
    assert updated.ok and updated.entity_obj is not None
    assert updated.entity_obj["Notes"] == "keep me" and updated.entity_obj["SyncToken"] == "1"

    stale = client.write_batch([WriteOp("c", "Customer", "update", {**update.body, "Notes": "lost"}, "s-3")])[
        0
    ]
    assert not stale.ok and isinstance(stale.error, StaleObjectError)
    assert (
        stale.current is not None
        and stale.current["SyncToken"] == "1"
        and stale.current["CompanyName"] == "Sparse"
    )


def test_voids_go_through_batch_or_single_calls(
    sandbox: SandboxServer, realm_id: str, client: QuickBooksClient
) -> None:
    customer_id, item_id = _customer_and_item(client)
    invoices = [
        r.entity_obj for r in client.write_batch([invoice_op(k, customer_id, item_id) for k in range(3)])
    ]
    assert all(invoices)
    invoice_id = invoices[2]["Id"]  # type: ignore[index]
    payment = SandboxAdmin(sandbox.base_url).action(realm_id, "record_payment", invoice_id=invoice_id)
    payment = payment["Payment"]
    writes_before = client.stats.calls.get("write", 0)

    results = client.write_batch(
        [
            WriteOp(
                "v0", "Invoice", "void", {"Id": invoices[0]["Id"], "SyncToken": "0", "Line": "ignored"}, "v-0"
            ),  # type: ignore[index]
            WriteOp("p", "Payment", "void", {"Id": payment["Id"], "SyncToken": payment["SyncToken"]}, "v-p"),
        ]
    )
    assert all(r.ok for r in results), results
    assert results[0].entity_obj["TotalAmt"] == 0 and results[0].entity_obj["PrivateNote"].startswith(
        "Voided"
    )  # type: ignore[index]
    assert results[1].entity_obj["TotalAmt"] == 0  # type: ignore[index]
    assert client.stats.calls["write"] - writes_before == 1  # the payment void is a single call

    voided, stale = client.write_batch(
        [
            WriteOp("v1", "Invoice", "void", {"Id": invoices[1]["Id"], "SyncToken": "0"}, "v-1"),  # type: ignore[index]
            WriteOp("v2", "Invoice", "void", {"Id": invoices[2]["Id"], "SyncToken": "9"}, "v-2"),  # type: ignore[index]
        ]
    )
    assert voided.ok and voided.entity_obj["Balance"] == 0 and voided.entity_obj["SyncToken"] == "1"  # type: ignore[index]
    assert not stale.ok and isinstance(stale.error, StaleObjectError)
    assert stale.current is not None and stale.current["Id"] == invoices[2]["Id"]  # type: ignore[index]


def test_three_thousand_invoices_through_drops_and_503s_land_exactly_once(
    sandbox: SandboxServer, realm_id: str, engine: Engine
) -> None:
    limiter = database_rate_limiter(engine, realm_id, RateLimits(time_scale=TIME_SCALE))
    tokens = SandboxTokens(sandbox.base_url, realm_id)
    config = ClientConfig(time_scale=TIME_SCALE, attempts=10)
    with QuickBooksClient(realm_id, sandbox.base_url, tokens, limiter=limiter, config=config) as qbo:
        customer_id, item_id = _customer_and_item(qbo)
        admin = SandboxAdmin(sandbox.base_url)
        admin.set_faults(realm_id, drop_after_write=0.10, error_503=0.05, seed=11)
        ops = [invoice_op(key, customer_id, item_id) for key in range(3000)]
        results = qbo.write_batch(ops)
        admin.set_faults(realm_id)

        assert [r.key for r in results] == list(range(3000))
        failed = [r for r in results if not r.ok]
        assert failed == []
        for result in results:
            assert result.entity_obj is not None and result.entity_obj["DocNumber"] == f"INV-{result.key:05d}"
        assert len({r.entity_obj["Id"] for r in results if r.entity_obj}) == 3000
        assert qbo.count("Invoice") == 3000
        assert qbo.stats.retries > 0 and qbo.stats.throttled == 0
    assert SandboxAdmin(sandbox.base_url).counter(realm_id, "dropped_connections") > 0
    assert SandboxAdmin(sandbox.base_url).counter(realm_id, "replays") > 0
