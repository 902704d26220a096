from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchly_pipelines.rules.mapping import (
    CUSTOMER_FIELDS,
    ITEM_FIELDS,
    SYNCED_FIELDS,
    customer_fields_from_qbo,
    customer_fields_from_row,
    customer_to_qbo,
    decode_snapshot,
    encode_snapshot,
    invoice_to_qbo,
    item_fields_from_qbo,
    item_fields_from_row,
    item_to_qbo,
    to_money,
    with_identity,
)
from batchly_pipelines_tests.support.strategies import SETTINGS, customer_rows, item_rows

QBO_CUSTOMER = {
    "Id": "58",
    "SyncToken": "3",
    "DisplayName": "Amy's Bird Sanctuary",
    "CompanyName": "Amy's Bird Sanctuary",
    "GivenName": "Amy",
    "FamilyName": "Lauterbach",
    "PrimaryEmailAddr": {"Address": "Birds@Intuit.com"},
    "PrimaryPhone": {"FreeFormNumber": "(650) 555-3311"},
    "BillAddr": {
        "Id": "2",
        "Line1": "4581 Finch St.",
        "City": "Bayshore",
        "CountrySubDivisionCode": "CA",
        "PostalCode": "94326",
    },
    "Notes": "",
    "Active": True,
    "Balance": 239.0,
    "MetaData": {"CreateTime": "2014-09-11T16:48:43-07:00", "LastUpdatedTime": "2014-09-18T12:49:42-07:00"},
}


def test_customer_fields_from_qbo_reads_nested_objects_and_normalises_empties() -> None:
    assert customer_fields_from_qbo(QBO_CUSTOMER) == {
        "display_name": "Amy's Bird Sanctuary",
        "company_name": "Amy's Bird Sanctuary",
        "given_name": "Amy",
        "family_name": "Lauterbach",
        "email": "Birds@Intuit.com",
        "phone": "(650) 555-3311",
        "bill_line1": "4581 Finch St.",
        "bill_city": "Bayshore",
        "bill_region": "CA",
        "bill_postal_code": "94326",
        "bill_country": None,
        "notes": None,
        "is_active": True,
    }


def test_missing_active_means_active_and_missing_objects_mean_none() -> None:
    fields = customer_fields_from_qbo({"DisplayName": "Bare"})
    assert fields["is_active"] is True
    assert fields["email"] is None and fields["bill_city"] is None


def test_full_customer_body_omits_empty_fields() -> None:
    row = dict.fromkeys(CUSTOMER_FIELDS) | {"display_name": " Acme ", "bill_city": "Oslo", "is_active": False}
    assert customer_to_qbo(row) == {"DisplayName": "Acme", "BillAddr": {"City": "Oslo"}, "Active": False}


def test_sparse_customer_body_sends_a_changed_nested_object_whole() -> None:
    row = dict.fromkeys(CUSTOMER_FIELDS) | {
        "display_name": "Acme",
        "email": "a@b.co",
        "bill_line1": "1 King's Rd",
        "bill_city": "Oslo",
        "bill_country": "NO",
    }
    # only the city changed, but QuickBooks replaces BillAddr as a unit: the other lines must travel with it
    assert customer_to_qbo(row, only=["email", "bill_city"]) == {
        "PrimaryEmailAddr": {"Address": "a@b.co"},
        "BillAddr": {
            "Line1": "1 King's Rd",
            "City": "Oslo",
            "CountrySubDivisionCode": "",
            "PostalCode": "",
            "Country": "NO",
        },
    }


def test_sparse_nested_update_refuses_a_partial_record() -> None:
    with pytest.raises(ValueError, match="BillAddr"):
        customer_to_qbo({"bill_city": "Oslo"}, only=["bill_city"])


def test_sparse_body_clears_an_emptied_text_field_explicitly() -> None:
    assert customer_to_qbo({"email": None, "notes": ""}, only={"email", "notes"}) == {
        "PrimaryEmailAddr": {"Address": ""},
        "Notes": "",
    }


def test_sparse_body_refuses_fields_that_are_not_synced() -> None:
    with pytest.raises(ValueError, match="balance"):
        customer_to_qbo({"balance": 1}, only=["balance"])


def test_item_mapping_reads_price_as_decimal_rounded_to_cents() -> None:
    fields = item_fields_from_qbo(
        {"Name": "Rock Fountain", "Sku": "RF-1", "Type": "Inventory", "UnitPrice": 275.125, "Active": False}
    )
    assert fields == {
        "name": "Rock Fountain",
        "sku": "RF-1",
        "description": None,
        "unit_price": Decimal("275.13"),
        "item_type": "Inventory",
        "is_active": False,
    }
    assert isinstance(fields["unit_price"], Decimal)


def test_an_item_without_a_price_costs_zero() -> None:
    assert item_fields_from_qbo({"Name": "Advice", "Type": "Service"})["unit_price"] == Decimal("0.00")


def test_description_only_item_update_never_touches_the_price() -> None:
    row = {"name": "Gardening", "sku": None, "description": "Weekly", "unit_price": Decimal("25")}
    assert item_to_qbo(row, only=["description"]) == {"Description": "Weekly"}


def test_sqlite_integer_flags_become_booleans() -> None:
    assert (
        item_fields_from_row(
            {
                "name": "x",
                "sku": None,
                "description": None,
                "unit_price": 1,
                "item_type": None,
                "is_active": 0,
            }
        )["is_active"]
        is False
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.1, Decimal("0.10")),
        (10, Decimal("10.00")),
        ("2.005", Decimal("2.01")),
        (Decimal("-1.234"), Decimal("-1.23")),
    ],
)
def test_to_money(value: object, expected: Decimal) -> None:
    assert to_money(value) == expected


@pytest.mark.parametrize("value", [True, [1], float("nan")])
def test_to_money_refuses_non_amounts(value: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        to_money(value)


@SETTINGS
@given(customer_rows(), st.data())
def test_customer_round_trip_batchly_qbo_batchly_is_identity(
    row: dict[str, Any], data: st.DataObject
) -> None:
    normalised = customer_fields_from_row(row)
    assert customer_fields_from_row(normalised) == normalised
    assert customer_fields_from_qbo(customer_to_qbo(row)) == normalised
    only = data.draw(st.sets(st.sampled_from(CUSTOMER_FIELDS)))
    sparse = customer_fields_from_qbo(customer_to_qbo(row, only=only))
    assert {name: sparse[name] for name in only} == {name: normalised[name] for name in only}


@SETTINGS
@given(item_rows(), st.data())
def test_item_round_trip_batchly_qbo_batchly_is_identity(row: dict[str, Any], data: st.DataObject) -> None:
    normalised = item_fields_from_row(row)
    assert item_fields_from_qbo(item_to_qbo(row)) == normalised
    only = data.draw(st.sets(st.sampled_from(ITEM_FIELDS)))
    body = item_to_qbo(row, only=only)
    sparse = item_fields_from_qbo(body)
    assert {name: sparse[name] for name in only} == {name: normalised[name] for name in only}
    assert len(body) == len(only)


@SETTINGS
@given(st.one_of(customer_rows(), item_rows()))
def test_snapshots_survive_json(row: dict[str, Any]) -> None:
    entity = "item" if "sku" in row else "customer"
    fields = (item_fields_from_row if entity == "item" else customer_fields_from_row)(row)
    stored = json.loads(json.dumps(encode_snapshot(fields)))
    assert decode_snapshot(entity, stored) == fields


def test_partial_snapshot_stays_partial() -> None:
    assert decode_snapshot("item", {"unit_price": "3.50"}) == {"unit_price": Decimal("3.50")}


def test_synced_fields_per_entity() -> None:
    assert SYNCED_FIELDS == {"customer": CUSTOMER_FIELDS, "item": ITEM_FIELDS}
    assert set(ITEM_FIELDS) == {"name", "sku", "description", "unit_price", "item_type", "is_active"}


def test_with_identity_makes_an_update_body() -> None:
    assert with_identity({"Notes": "x"}, qbo_id="7", sync_token="2", sparse=True) == {
        "Notes": "x",
        "Id": "7",
        "SyncToken": "2",
        "sparse": True,
    }


INVOICE = {
    "id": 9,
    "doc_number": "INV-1001",
    "txn_date": date(2026, 3, 1),
    "due_date": date(2026, 3, 31),
    "total_amount": Decimal("45.00"),
}
LINES: list[dict[str, Any]] = [
    {"id": 2, "line_no": 2, "item_id": 11, "description": None, "quantity": Decimal("1"), "unit_price": Decimal("15"),
     "amount": Decimal("15.00")},
    {"id": 1, "line_no": 1, "item_id": 10, "description": "Pruning", "quantity": Decimal("2"),
     "unit_price": Decimal("15.00"), "amount": Decimal("30.00")},
]  # fmt: skip


def test_invoice_to_qbo_builds_ordered_sales_item_lines() -> None:
    body = invoice_to_qbo(INVOICE, LINES, customer_qbo_id="58", item_qbo_ids={10: "5", 11: "6"})
    assert body == {
        "CustomerRef": {"value": "58"},
        "DocNumber": "INV-1001",
        "TxnDate": "2026-03-01",
        "DueDate": "2026-03-31",
        "Line": [
            {
                "LineNum": 1,
                "Amount": Decimal("30.00"),
                "DetailType": "SalesItemLineDetail",
                "Description": "Pruning",
                "SalesItemLineDetail": {
                    "ItemRef": {"value": "5"},
                    "Qty": Decimal("2"),
                    "UnitPrice": Decimal("15.00"),
                },
            },
            {
                "LineNum": 2,
                "Amount": Decimal("15.00"),
                "DetailType": "SalesItemLineDetail",
                "SalesItemLineDetail": {
                    "ItemRef": {"value": "6"},
                    "Qty": Decimal("1"),
                    "UnitPrice": Decimal("15"),
                },
            },
        ],
    }


def test_replacement_invoice_notes_what_it_replaces_and_omits_empty_header_fields() -> None:
    invoice = INVOICE | {"doc_number": None, "due_date": None}
    body = invoice_to_qbo(
        invoice, LINES[:1], customer_qbo_id="1", item_qbo_ids={11: "6"}, replaces_doc_number="7"
    )
    assert body["PrivateNote"] == "Replaces invoice 7"
    assert "DocNumber" not in body and "DueDate" not in body


def test_invoice_to_qbo_refuses_a_line_whose_item_has_no_qbo_id() -> None:
    with pytest.raises(ValueError, match="item 11"):
        invoice_to_qbo(INVOICE, LINES, customer_qbo_id="58", item_qbo_ids={10: "5"})
