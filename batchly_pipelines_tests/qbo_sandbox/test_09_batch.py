"""Checklist 9: batch ≤ 30 items, per-item faults, no visibility of same-batch creates."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from batchly_pipelines_tests.support.sandbox_client import Qbo, fault_code
from qbo_sandbox.books import Books


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


def test_unexpected_error_in_one_item_is_a_system_fault_and_the_answer_is_kept(
    qbo: Qbo, monkeypatch: pytest.MonkeyPatch
) -> None:
    create = Books.create

    def broken(self: Books, entity: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if payload.get("DisplayName") == "Boom":
            raise RuntimeError("an unexpected bug")
        return create(self, entity, payload)

    monkeypatch.setattr(Books, "create", broken)
    items = [_create(1), {"bId": "2", "operation": "create", "Customer": {"DisplayName": "Boom"}}, _create(3)]
    first = qbo.post("batch", {"BatchItemRequest": items}, requestid="batch-boom")
    answers = qbo.ok(first)["BatchItemResponse"]
    assert answers[0]["Customer"]["DisplayName"] == "Batch 1"
    assert answers[1]["bId"] == "2" and answers[1]["Fault"]["type"] == "SystemFault"
    assert answers[1]["Fault"]["Error"][0]["code"] == "10000"
    assert answers[2]["Customer"]["DisplayName"] == "Batch 3"
    retry = qbo.post("batch", {"BatchItemRequest": items}, requestid="batch-boom")
    assert retry.status_code == 200 and retry.content == first.content, "replayed, not executed again"
    assert qbo.query("SELECT COUNT(*) FROM Customer")["totalCount"] == 2


def test_out_of_range_quantity_is_a_per_item_fault_and_the_answer_is_kept(qbo: Qbo) -> None:
    customer, item = qbo.customer(), qbo.item()
    line = {
        "DetailType": "SalesItemLineDetail",
        "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}, "Qty": Decimal("1e30"), "UnitPrice": 1},
    }
    invoice = {"CustomerRef": {"value": customer["Id"]}, "Line": [line]}
    items = [_create(1), {"bId": "2", "operation": "create", "Invoice": invoice}]
    first = qbo.post("batch", {"BatchItemRequest": items}, requestid="batch-huge")
    answers = qbo.ok(first)["BatchItemResponse"]
    assert answers[0]["Customer"]["DisplayName"] == "Batch 1"
    assert answers[1]["Fault"]["type"] == "ValidationFault"
    assert answers[1]["Fault"]["Error"][0]["code"] == "2050"
    retry = qbo.post("batch", {"BatchItemRequest": items}, requestid="batch-huge")
    assert retry.content == first.content
    assert qbo.query("SELECT COUNT(*) FROM Customer")["totalCount"] == 2
    assert qbo.query("SELECT COUNT(*) FROM Invoice")["totalCount"] == 0
