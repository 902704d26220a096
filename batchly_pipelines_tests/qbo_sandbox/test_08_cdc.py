"""Checklist 8: CDC with deletions, the 30-day limit and the 1000-object cap across entities."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from batchly_pipelines_tests.support.sandbox_client import Qbo, fault_code


def _since(minutes: int = 5) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat()


def test_cdc_lists_changes_and_deleted_payment(qbo: Qbo) -> None:
    customer, item = qbo.customer(), qbo.item()
    invoice = qbo.invoice(customer, item, "80.00")
    payment = qbo.payment(invoice, "80.00")
    qbo.ok(qbo.post("payment", {"Id": payment["Id"], "SyncToken": "0"}, operation="delete"))
    body = qbo.ok(qbo.get("cdc", entities="Invoice,Payment,Customer", changedSince=_since()))
    responses = body["CDCResponse"][0]["QueryResponse"]
    by_entity = {
        key: rows for response in responses for key, rows in response.items() if isinstance(rows, list)
    }
    deleted = by_entity["Payment"][0]
    assert deleted["Id"] == payment["Id"] and deleted["status"] == "Deleted"
    assert deleted["MetaData"]["LastUpdatedTime"]
    assert [row["Id"] for row in by_entity["Invoice"]] == [invoice["Id"]]
    assert by_entity["Invoice"][0]["Balance"] == 80
    assert [row["Id"] for row in by_entity["Customer"]] == [customer["Id"]]
    assert "time" in body


def test_cdc_nothing_changed(qbo: Qbo) -> None:
    body = qbo.ok(
        qbo.get(
            "cdc", entities="Customer", changedSince=(datetime.now(UTC) + timedelta(minutes=5)).isoformat()
        )
    )
    assert body["CDCResponse"] == [{"QueryResponse": [{}]}]


def test_cdc_includes_inactive_customers(qbo: Qbo) -> None:
    customer = qbo.customer("Gone Quiet")
    qbo.create("Customer", {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "Active": False})
    rows = qbo.ok(qbo.get("cdc", entities="Customer", changedSince=_since()))["CDCResponse"][0][
        "QueryResponse"
    ][0]
    assert rows["Customer"][0]["Active"] is False


def test_cdc_older_than_30_days_is_rejected(qbo: Qbo) -> None:
    response = qbo.get(
        "cdc", entities="Customer", changedSince=(datetime.now(UTC) - timedelta(days=31)).isoformat()
    )
    assert response.status_code == 400 and "30 days" in response.json()["Fault"]["Error"][0]["Detail"]
    assert fault_code(qbo.get("cdc", entities="Customer")) == "2020"


def test_cdc_window_follows_the_sandbox_clock(qbo: Qbo) -> None:
    qbo.customer("Old News")
    since = _since()
    with qbo.admin.clock_advanced(31 * 86400):
        fresh = Qbo(qbo.sandbox, qbo.realm_id)
        assert fresh.get("cdc", entities="Customer", changedSince=since).status_code == 400


def test_cdc_caps_at_1000_objects_across_entities(qbo: Qbo) -> None:
    qbo.admin.seed(qbo.realm_id, customers=700, items=400, invoices=0, payments=0, days=1)
    body = qbo.ok(qbo.get("cdc", entities="Customer,Item", changedSince=_since(2 * 24 * 60)))
    responses = body["CDCResponse"][0]["QueryResponse"]
    counts = {
        key: len(rows) for response in responses for key, rows in response.items() if isinstance(rows, list)
    }
    assert sum(counts.values()) == 1000
    assert set(counts) == {"Customer", "Item"}
