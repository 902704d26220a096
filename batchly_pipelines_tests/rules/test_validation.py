from __future__ import annotations

import random
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchly_pipelines.rules.validation import (
    IMMUTABLE_MESSAGE,
    PUSHABLE_ENTITIES,
    NotPushableError,
    ValidationIssue,
    assert_pushable,
    invoice_fingerprint,
    validate_customer,
    validate_invoice,
    validate_item,
)
from batchly_pipelines_tests.support.strategies import SETTINGS

CUSTOMER: dict[str, Any] = {
    "id": 1,
    "display_name": "Acme Ltd",
    "company_name": None,
    "given_name": None,
    "family_name": None,
    "email": "billing@acme.test",
    "phone": "+1 555 123 4567",
    "bill_line1": None,
    "bill_city": None,
    "bill_region": None,
    "bill_postal_code": None,
    "bill_country": None,
    "notes": None,
    "is_active": True,
    "qbo_id": None,
}
ITEM: dict[str, Any] = {
    "id": 10,
    "name": "Pruning",
    "sku": "PR-1",
    "description": None,
    "unit_price": Decimal("15.00"),
    "item_type": "Service",
    "is_active": True,
    "qbo_id": "5",
}
INVOICE: dict[str, Any] = {
    "id": 100,
    "customer_id": 1,
    "sales_order_id": 7,
    "doc_number": "INV-100",
    "txn_date": date(2026, 3, 1),
    "due_date": date(2026, 3, 31),
    "total_amount": Decimal("37.50"),
    "status": "open",
    "qbo_id": None,
}
LINES: list[dict[str, Any]] = [
    {"id": 1, "line_no": 1, "item_id": 10, "description": "Hedge", "quantity": Decimal("2"),
     "unit_price": Decimal("15.00"), "amount": Decimal("30.00")},
    {"id": 2, "line_no": 2, "item_id": 10, "description": None, "quantity": Decimal("0.5"),
     "unit_price": Decimal("15.00"), "amount": Decimal("7.50")},
]  # fmt: skip


def fields_of(issues: list[ValidationIssue]) -> set[str]:
    return {issue.field for issue in issues}


def invoice_issues(
    invoice: dict[str, Any] = INVOICE,
    lines: list[dict[str, Any]] = LINES,
    *,
    customer: dict[str, Any] | None = CUSTOMER,
    items: dict[Any, dict[str, Any]] | None = None,
    pushed_fingerprint: str | None = None,
) -> list[ValidationIssue]:
    return validate_invoice(
        invoice,
        lines,
        customer=customer,
        items={10: ITEM} if items is None else items,
        pushed_fingerprint=pushed_fingerprint,
    )


def test_valid_records_have_no_issues() -> None:
    assert validate_customer(CUSTOMER) == []
    assert validate_item(ITEM) == []
    assert invoice_issues() == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"display_name": None}, "display_name"),
        ({"display_name": "   "}, "display_name"),
        ({"display_name": "Acme: West"}, "display_name"),
        ({"display_name": "Acme\tWest"}, "display_name"),
        ({"display_name": "Acme\nWest"}, "display_name"),
        ({"display_name": "x" * 501}, "display_name"),
        ({"phone": "1" * 31}, "phone"),
        ({"notes": "n" * 2001}, "notes"),
        ({"company_name": "c" * 101}, "company_name"),
        ({"given_name": "g" * 101}, "given_name"),
        ({"bill_postal_code": "9" * 31}, "bill_postal_code"),
        ({"bill_line1": "l" * 501}, "bill_line1"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@b"}, "email"),
        ({"email": "a b@c.test"}, "email"),
    ],
)
def test_customer_rules(changes: dict[str, Any], field: str) -> None:
    issues = validate_customer(CUSTOMER | changes)
    assert fields_of(issues) == {field}
    assert all(issue.entity == "customer" and issue.record_id == 1 for issue in issues)


def test_customer_name_parts_replace_a_display_name_and_limits_are_inclusive() -> None:
    assert validate_customer(CUSTOMER | {"display_name": None, "family_name": "García"}) == []
    limits = {"display_name": "x" * 500, "phone": "1" * 30, "notes": "n" * 2000}
    assert validate_customer(CUSTOMER | limits) == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": None}, "name"),
        ({"name": "n" * 101}, "name"),
        ({"sku": "s" * 101}, "sku"),
        ({"unit_price": Decimal("-0.01")}, "unit_price"),
        ({"item_type": "Category"}, "item_type"),
        ({"item_type": None}, "item_type"),
        ({"item_type": "Inventory", "qbo_id": None}, "item_type"),
        ({"description": "d" * 4001}, "description"),
    ],
)
def test_item_rules(changes: dict[str, Any], field: str) -> None:
    assert fields_of(validate_item(ITEM | changes)) == {field}


def test_inventory_items_already_in_quickbooks_are_fine_to_reference() -> None:
    assert validate_item(ITEM | {"item_type": "Inventory", "qbo_id": "12", "description": "d" * 4000}) == []


def test_item_without_price_is_fine() -> None:
    assert validate_item(ITEM | {"unit_price": None, "sku": "s" * 100, "name": "n" * 100}) == []


def line(number: int, **changes: Any) -> list[dict[str, Any]]:
    return [row | changes if row["line_no"] == number else row for row in LINES]


@pytest.mark.parametrize(
    ("lines", "invoice_changes", "fields"),
    [
        ([], {"total_amount": Decimal("0")}, {"lines"}),
        (line(1, quantity=Decimal("0"), amount=Decimal("0")), {"total_amount": Decimal("7.50")}, {"lines[1].quantity"}),
        (line(2, quantity=Decimal("-1"), amount=Decimal("-15")), {"total_amount": Decimal("15")}, {"lines[2].quantity"}),
        (line(1, unit_price=Decimal("-15"), amount=Decimal("-30")), {"total_amount": Decimal("-22.50")},
         {"lines[1].unit_price"}),
        (line(1, amount=Decimal("31.00")), {"total_amount": Decimal("38.50")}, {"lines[1].amount"}),
        (LINES, {"total_amount": Decimal("37.49")}, {"total_amount"}),
        (line(2, item_id=None), {}, {"lines[2].item_id"}),
        (line(2, item_id=99), {}, {"lines[2].item_id"}),
        (LINES, {"customer_id": None}, {"customer_id"}),
        (LINES, {"status": "draft"}, {"status"}),
        (LINES, {"status": "void"}, {"status"}),
        (LINES, {"status": "paid"}, {"status"}),
        (LINES, {"doc_number": "D" * 22}, {"doc_number"}),
        (line(1, description="d" * 4001), {}, {"lines[1].description"}),
    ],
)  # fmt: skip
def test_invoice_rules(
    lines: list[dict[str, Any]], invoice_changes: dict[str, Any], fields: set[str]
) -> None:
    issues = invoice_issues(INVOICE | invoice_changes, lines)
    assert fields_of(issues) == fields
    assert all(issue.entity == "invoice" and issue.record_id == 100 for issue in issues)


@pytest.mark.parametrize("doc_number", [None, "", "   ", "\t"])
def test_a_blank_doc_number_is_refused_naming_the_record_and_field(doc_number: str | None) -> None:
    (issue,) = invoice_issues(INVOICE | {"doc_number": doc_number})
    assert str(issue).startswith("invoice 100 doc_number: required (blank or only spaces)")


def test_doc_number_is_checked_as_sent_trimmed() -> None:
    assert invoice_issues(INVOICE | {"doc_number": " " + "D" * 21 + " "}) == []


def test_amount_is_quantity_times_price_rounded_to_cents() -> None:
    lines = [
        LINES[0] | {"quantity": Decimal("0.333"), "unit_price": Decimal("10.00"), "amount": Decimal("3.33")}
    ]
    assert invoice_issues(INVOICE | {"total_amount": Decimal("3.33")}, lines) == []


def test_unknown_customer_and_unpushable_references_are_named() -> None:
    (unknown,) = invoice_issues(customer=None)
    assert (unknown.field, unknown.message) == ("customer_id", "unknown record 1")
    (bad_customer,) = invoice_issues(customer=CUSTOMER | {"display_name": "A:B"})
    assert bad_customer.field == "customer_id" and "cannot be pushed" in bad_customer.message
    unpushed_bad_item = ITEM | {"qbo_id": None, "item_type": "Bundle"}
    assert fields_of(invoice_issues(items={10: unpushed_bad_item})) == {
        "lines[1].item_id",
        "lines[2].item_id",
    }
    assert fields_of(invoice_issues(items={10: ITEM | {"is_active": False}})) == {
        "lines[1].item_id",
        "lines[2].item_id",
    }
    assert invoice_issues(customer=CUSTOMER | {"is_active": False})[0].message == "1 is inactive"


def test_an_already_pushed_reference_is_not_revalidated_and_a_pushable_one_is_fine() -> None:
    assert invoice_issues(items={10: ITEM | {"item_type": "Bundle"}}) == []  # lives in QuickBooks already
    assert invoice_issues(items={10: ITEM | {"qbo_id": None}}) == []


def test_pushed_invoice_is_immutable() -> None:
    pushed = INVOICE | {"qbo_id": "130"}
    fingerprint = invoice_fingerprint(INVOICE, LINES)
    assert invoice_issues(pushed, pushed_fingerprint=fingerprint) == []
    (edited,) = invoice_issues(pushed, line(2, description="changed"), pushed_fingerprint=fingerprint)
    assert (edited.field, edited.message) == ("qbo_id", IMMUTABLE_MESSAGE)
    assert "void + re-create" in str(edited)
    assert fields_of(invoice_issues(pushed)) == {"qbo_id"}


def test_fingerprint_ignores_line_order_and_decimal_spelling_but_not_content() -> None:
    base = invoice_fingerprint(INVOICE, LINES)
    respelled = [row | {"quantity": row["quantity"] * Decimal("1.000")} for row in reversed(LINES)]
    assert invoice_fingerprint(INVOICE | {"qbo_id": "9", "status": "void"}, respelled) == base
    for header in ({"due_date": date(2026, 4, 1)}, {"txn_date": date(2026, 3, 2)}, {"customer_id": 2}):
        assert invoice_fingerprint(INVOICE | header, LINES) != base
    assert invoice_fingerprint(INVOICE, line(1, item_id=11)) != base


positive = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("1000"), places=3)
price = st.decimals(min_value=Decimal("0"), max_value=Decimal("10000"), places=2)


@SETTINGS
@given(st.lists(st.tuples(positive, price), min_size=1, max_size=6), st.randoms())
def test_consistent_invoices_always_validate(
    pairs: list[tuple[Decimal, Decimal]], rnd: random.Random
) -> None:
    lines: list[dict[str, Any]] = [
        {"line_no": n, "item_id": 10, "description": None, "quantity": q, "unit_price": p,
         "amount": (q * p).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)}
        for n, (q, p) in enumerate(pairs, start=1)
    ]  # fmt: skip
    total = sum((row["amount"] for row in lines), Decimal("0"))
    rnd.shuffle(lines)
    assert invoice_issues(INVOICE | {"total_amount": total}, lines) == []
    broken = lines[0] | {"quantity": -lines[0]["quantity"]}
    assert f"lines[{broken['line_no']}].quantity" in fields_of(invoice_issues(INVOICE, [broken, *lines[1:]]))


@pytest.mark.parametrize("entity", sorted(PUSHABLE_ENTITIES))
def test_customers_items_and_invoices_are_pushable(entity: str) -> None:
    assert_pushable(entity)


@pytest.mark.parametrize("entity", ["sales_order", "sales_order_line", "payment", "SalesOrder", ""])
def test_sales_orders_and_anything_else_are_never_pushable(entity: str) -> None:
    with pytest.raises(NotPushableError, match="never sent"):
        assert_pushable(entity)


def test_issue_text_names_record_and_field() -> None:
    assert str(ValidationIssue("invoice", 7, "lines[2].quantity", "must be greater than zero")) == (
        "invoice 7 lines[2].quantity: must be greater than zero"
    )
