"""Checklist 4: SyncToken (5010), full vs sparse updates, whole-line replacement, read-only fields ignored."""

from __future__ import annotations

from decimal import Decimal

from batchly_pipelines_tests.support.sandbox_client import Qbo, fault_code


def test_stale_sync_token_is_5010(qbo: Qbo) -> None:
    customer = qbo.customer("Stale Co", Notes="v0")
    updated = qbo.create("Customer", {**customer, "Notes": "v1"})
    assert updated["SyncToken"] == "1"
    stale = qbo.post("customer", {**customer, "Notes": "v2"})
    assert stale.status_code == 400 and fault_code(stale) == "5010"
    assert stale.json()["Fault"]["Error"][0]["Message"] == "Stale Object Error"
    assert qbo.read("Customer", customer["Id"])["Notes"] == "v1"


def test_update_without_sync_token_is_2020(qbo: Qbo) -> None:
    customer = qbo.customer("No Token")
    response = qbo.post("customer", {"Id": customer["Id"], "DisplayName": "No Token 2"})
    assert fault_code(response) == "2020"


def test_full_update_clears_omitted_fields(qbo: Qbo) -> None:
    customer = qbo.customer("Full Update", Notes="keep?", PrimaryEmailAddr={"Address": "a@example.com"})
    updated = qbo.create("Customer", {"Id": customer["Id"], "SyncToken": "0", "DisplayName": "Full Update"})
    assert "Notes" not in updated and "PrimaryEmailAddr" not in updated


def test_sparse_update_changes_only_sent_fields(qbo: Qbo) -> None:
    customer = qbo.customer("Sparse Update", Notes="kept", PrimaryEmailAddr={"Address": "a@example.com"})
    updated = qbo.create(
        "Customer", {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "GivenName": "Ada"}
    )
    assert updated["Notes"] == "kept" and updated["PrimaryEmailAddr"] == {"Address": "a@example.com"}
    assert updated["GivenName"] == "Ada" and updated["SyncToken"] == "1"
    assert updated["MetaData"]["CreateTime"] == customer["MetaData"]["CreateTime"]


def test_lines_are_replaced_whole(qbo: Qbo) -> None:
    customer, item = qbo.customer(), qbo.item()
    invoice = qbo.invoice(customer, item, "10.00", "20.00", "30.00")
    assert invoice["TotalAmt"] == Decimal("60.00")
    line = {
        "DetailType": "SalesItemLineDetail",
        "Amount": Decimal("5.00"),
        "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}},
    }
    body = {"Id": invoice["Id"], "SyncToken": invoice["SyncToken"], "sparse": True, "Line": [line]}
    updated = qbo.create("Invoice", body)
    sales = [ln for ln in updated["Line"] if ln["DetailType"] == "SalesItemLineDetail"]
    assert [ln["Amount"] for ln in sales] == [Decimal("5.00")]
    assert updated["TotalAmt"] == Decimal("5.00") and updated["Balance"] == Decimal("5.00")


def test_read_only_fields_are_ignored(qbo: Qbo) -> None:
    customer, item = qbo.customer(), qbo.item()
    invoice = qbo.invoice(customer, item, "40.00", TotalAmt=Decimal("999"), Balance=Decimal("1"))
    assert invoice["TotalAmt"] == Decimal("40.00") and invoice["Balance"] == Decimal("40.00")
    created = qbo.customer(
        "Read Only", Balance=Decimal("500"), MetaData={"CreateTime": "2001-01-01T00:00:00-08:00"}
    )
    assert created["Balance"] == 0 and not created["MetaData"]["CreateTime"].startswith("2001")


def test_subtotal_line_round_trips(qbo: Qbo) -> None:
    customer, item = qbo.customer(), qbo.item()
    invoice = qbo.invoice(customer, item, "12.50")
    assert invoice["Line"][-1]["DetailType"] == "SubTotalLineDetail"
    again = qbo.create("Invoice", invoice)
    assert again["TotalAmt"] == Decimal("12.50") and again["SyncToken"] == "1"
    assert sum(1 for ln in again["Line"] if ln["DetailType"] == "SubTotalLineDetail") == 1
