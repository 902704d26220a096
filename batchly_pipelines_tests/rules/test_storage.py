"""What Batchly's columns can hold (``rules.storage``), checked against the real column definitions."""

from __future__ import annotations

from decimal import Decimal

import pytest

from batchly_pipelines.rules.storage import ColumnRule, unstorable
from batchly_pipelines.store.records import column_rules

CUSTOMER = column_rules("customer")
ITEM = column_rules("item")


@pytest.mark.parametrize(
    ("values", "rules", "field", "says"),
    [
        ({"notes": "a\x00b"}, CUSTOMER, "notes", "NUL character (at position 1)"),
        ({"display_name": "Zoë \ud800"}, CUSTOMER, "display_name", "unpaired surrogate"),
        ({"phone": "5" * 31}, CUSTOMER, "phone", "31 characters long; Batchly holds at most 30"),
        ({"display_name": None}, CUSTOMER, "display_name", "requires a value"),
        ({"unit_price": Decimal("10000000000.00")}, ITEM, "unit_price", "does not fit NUMERIC(12,2)"),
        ({"unit_price": Decimal("-10000000000.00")}, ITEM, "unit_price", "at most ±9999999999.99"),
    ],
)
def test_values_the_columns_cannot_hold_are_named_with_why(
    values: dict[str, object], rules: dict[str, ColumnRule], field: str, says: str
) -> None:
    problems = unstorable(values, rules)
    assert list(problems) == [field] and says in problems[field]


def test_values_that_fit_and_columns_without_a_rule_pass() -> None:
    fitting = {
        "display_name": "Zoë O'Brien 🎉",
        "phone": "5" * 30,
        "notes": None,
        "is_active": False,  # not text nor a number
        "unknown_column": "\x00",
    }
    assert unstorable(fitting, CUSTOMER) == {}
    assert unstorable({"unit_price": Decimal("9999999999.99"), "name": "x" * 100}, ITEM) == {}
