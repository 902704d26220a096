"""What Batchly's columns can hold: a QuickBooks value the database would refuse is found before it is written.

QuickBooks accepts what Batchly's schema cannot store — a NUL character or an unpaired surrogate (PostgreSQL text and
UTF-8 refuse both), a name longer than the column, an amount beyond ``NUMERIC(12,2)``. Writing one fails the whole
transaction, and with it every later pull of the organisation; checked first, such a record goes to the pull's error
list (naming the record and the field) and the rest is stored. The same rules hold on SQLite, which would store most
of these values without complaint: both backends list the same errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

MESSAGE_MAX = 1000  # pull_errors.message


@dataclass(frozen=True)
class ColumnRule:
    """What one column accepts: text up to ``length`` characters, or a number of ``precision`` digits, ``scale`` of
    them after the point; ``nullable`` False refuses an empty value."""

    kind: Literal["text", "number", "other"]
    nullable: bool = True
    length: int | None = None
    precision: int | None = None
    scale: int | None = None


def unstorable(values: Mapping[str, Any], rules: Mapping[str, ColumnRule]) -> dict[str, str]:
    """Column → why it cannot hold its value, for the ``values`` whose column has a rule."""
    problems = {}
    for column, value in values.items():
        rule = rules.get(column)
        if rule is None:
            continue
        problem = _problem(value, rule)
        if problem is not None:
            problems[column] = problem[:MESSAGE_MAX]
    return problems


def _problem(value: Any, rule: ColumnRule) -> str | None:
    if value is None:
        return None if rule.nullable else "is empty, and Batchly requires a value"
    if rule.kind == "text" and isinstance(value, str):
        return _text_problem(value, rule.length)
    if rule.kind == "number" and isinstance(value, int | Decimal) and not isinstance(value, bool):
        return _number_problem(Decimal(value), rule.precision, rule.scale)
    return None


def _text_problem(value: str, length: int | None) -> str | None:
    if "\x00" in value:
        return f"contains a NUL character (at position {value.index(chr(0))}), which Batchly cannot store"
    try:
        if not value.isascii():  # ASCII (most text; told by a flag, not a scan) holds no surrogate
            value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"contains an unpaired surrogate (at position {exc.start}), which is not valid Unicode"
    if length is not None and len(value) > length:
        return f"is {len(value)} characters long; Batchly holds at most {length}"
    return None


def _number_problem(value: Decimal, precision: int | None, scale: int | None) -> str | None:
    if precision is None:
        return None
    digits_before_point = precision - (scale or 0)
    if not value.is_finite() or abs(value) >= Decimal(10) ** digits_before_point:
        largest = Decimal(10) ** digits_before_point - Decimal(1).scaleb(-(scale or 0))
        return f"{value} does not fit NUMERIC({precision},{scale or 0}) (at most ±{largest})"
    return None
