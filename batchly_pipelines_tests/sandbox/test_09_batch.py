"""Checklist 9: batch ≤ 30 items, per-item faults, no visibility of same-batch creates."""

from __future__ import annotations

from batchly_pipelines_tests.sandbox.client import Qbo, fault_code


def _create(n: int) -> dict:
    return {"bId": str(n), "operation": "create", "Customer": {"DisplayName": f"Batch {n}"}}


def test_thirty_items_accepted_thirty_one_rejected(qbo: Qbo) -> None:
    ok = qbo.ok(qbo.post("batch", {"BatchItemRequest": [_create(n) for n in range(30)]}))
    assert len(ok["BatchItemResponse"]) == 30 and "time" in ok
    assert [r["bId"] for r in ok["BatchItemResponse"]] == [str(n) for n in range(30)]
    rejected = qbo.post("batch", {"BatchItemRequest": [_create(n) for n in range(100, 131)]})
    assert rejected.status_code == 400 and "Fault" in rejected.json()
    assert fault_code(rejected) == "6000"
    assert qbo.query("SELECT COUNT(*) FROM Customer")["totalCount"] == 30


def test_per_item_faults(qbo: Qbo) -> None:
    existing = qbo.customer("Existing")
    items = [
        _create(1),
        {"bId": "2", "operation": "create", "Customer": {"DisplayName": "Existing"}},
        {
            "bId": "3",
            "operation": "update",
            "Customer": {"Id": existing["Id"], "SyncToken": "7", "Notes": "x"},
        },
        {"bId": "4", "Query": "SELECT * FROM Customer WHERE DisplayName = 'Existing'"},
        {"bId": "5", "Query": "SELECT * FROM Customer WHERE Active = true OR Active = false"},
    ]
    response = qbo.ok(qbo.post("batch", {"BatchItemRequest": items}))["BatchItemResponse"]
    assert response[0]["Customer"]["DisplayName"] == "Batch 1"
    assert (
        response[1]["Fault"]["Error"][0]["code"] == "6240"
        and response[1]["Fault"]["type"] == "ValidationFault"
    )
    assert response[2]["Fault"]["Error"][0]["code"] == "5010"
    assert response[3]["QueryResponse"]["Customer"][0]["Id"] == existing["Id"]
    assert response[4]["Fault"]["Error"][0]["code"] == "4000"


def test_same_batch_creates_are_invisible(qbo: Qbo) -> None:
    item = qbo.item()
    items = [
        {"bId": "c", "operation": "create", "Customer": {"DisplayName": "Born In Batch"}},
        {"bId": "q", "Query": "SELECT COUNT(*) FROM Customer"},
    ]
    created = qbo.ok(qbo.post("batch", {"BatchItemRequest": items}))["BatchItemResponse"]
    customer_id = created[0]["Customer"]["Id"]
    assert created[1]["QueryResponse"]["totalCount"] == 0
    line = {
        "DetailType": "SalesItemLineDetail",
        "Amount": 1,
        "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}},
    }
    invoice = {"CustomerRef": {"value": customer_id}, "Line": [line]}
    dependent = [
        {"bId": "c2", "operation": "create", "Customer": {"DisplayName": "Second Born"}},
        {"bId": "i1", "operation": "create", "Invoice": invoice},
    ]
    second = qbo.ok(qbo.post("batch", {"BatchItemRequest": dependent}))["BatchItemResponse"]
    assert "Invoice" in second[1]
    second_id = second[0]["Customer"]["Id"]
    blind = [
        {"bId": "c3", "operation": "create", "Customer": {"DisplayName": "Third Born"}},
        {
            "bId": "u",
            "operation": "update",
            "Customer": {"Id": str(int(second_id) + 2), "SyncToken": "0", "sparse": True},
        },
    ]
    third = qbo.ok(qbo.post("batch", {"BatchItemRequest": blind}))["BatchItemResponse"]
    assert third[1]["Fault"]["Error"][0]["code"] == "610"
    assert qbo.read("Customer", third[0]["Customer"]["Id"])["DisplayName"] == "Third Born"


def test_batch_delete(qbo: Qbo) -> None:
    customer, item = qbo.customer(), qbo.item()
    invoice = qbo.invoice(customer, item)
    items = [{"bId": "d", "operation": "delete", "Invoice": {"Id": invoice["Id"], "SyncToken": "0"}}]
    response = qbo.ok(qbo.post("batch", {"BatchItemRequest": items}))["BatchItemResponse"][0]
    assert response["Invoice"]["status"] == "Deleted"
