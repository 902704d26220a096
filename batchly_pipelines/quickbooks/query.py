"""Building QuickBooks query statements: literals escaped correctly, datetimes in the form QuickBooks compares.

Only what the query language has: ``AND``-ed conditions with ``= < > <= >= IN LIKE``, ``ORDERBY``, ``STARTPOSITION``,
``MAXRESULTS``. Strings are single-quoted with backslash and apostrophe escaped (``O'Brien`` → ``'O\\'Brien'``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal

from batchly_pipelines.quickbooks.wire import format_qbo_time

MAX_RESULTS = 1000
OPERATORS = frozenset({"=", "<", ">", "<=", ">=", "IN", "LIKE"})
NAME_LISTS = frozenset({"Customer", "Item", "Vendor", "Employee", "Account", "Class", "Department", "Term"})
ALL_ACTIVE_STATES = "Active IN (true, false)"

Literal = str | bool | int | Decimal | date | datetime


def quote(text: str) -> str:
    """A string literal: single quotes, with ``\\`` and ``'`` escaped by a backslash."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def literal(value: Literal) -> str:
    """A value as it appears on the right of an operator."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return quote(format_qbo_time(value))
    if isinstance(value, date):
        return quote(value.isoformat())
    if isinstance(value, int | Decimal):
        return str(value)
    return quote(value)


def condition(field: str, op: str, value: Literal | Iterable[Literal]) -> str:
    """``field op value``; ``IN`` takes an iterable of values."""
    op = op.upper()
    if op not in OPERATORS:
        raise ValueError(f"unsupported operator {op!r}: QuickBooks knows {sorted(OPERATORS)}")
    if op == "IN":
        if isinstance(value, str | bytes) or not isinstance(value, Iterable):
            raise ValueError("IN needs an iterable of values")
        values = [literal(v) for v in value]
        if not values:
            raise ValueError("IN needs at least one value")
        return f"{field} IN ({', '.join(values)})"
    if isinstance(value, Iterable) and not isinstance(value, str):
        raise ValueError(f"{op} takes one value")
    return f"{field} {op} {literal(value)}"


def select(
    entity: str,
    where: Sequence[str] = (),
    order_by: str | None = None,
    start_position: int | None = None,
    max_results: int | None = None,
) -> str:
    """``SELECT * FROM entity [WHERE …] [ORDERBY …] [STARTPOSITION n] [MAXRESULTS m]``."""
    if max_results is not None and not 1 <= max_results <= MAX_RESULTS:
        raise ValueError(f"MAXRESULTS must be between 1 and {MAX_RESULTS}")
    parts = [f"SELECT * FROM {entity}", _where(where)]
    if order_by:
        parts.append(f"ORDERBY {order_by}")
    if start_position is not None:
        parts.append(f"STARTPOSITION {start_position}")
    if max_results is not None:
        parts.append(f"MAXRESULTS {max_results}")
    return " ".join(part for part in parts if part)


def count(entity: str, where: Sequence[str] = ()) -> str:
    """``SELECT COUNT(*) FROM entity [WHERE …]``."""
    return " ".join(part for part in (f"SELECT COUNT(*) FROM {entity}", _where(where)) if part)


def with_all_active_states(entity: str, where: Sequence[str]) -> list[str]:
    """Conditions that see inactive records too: name lists return active rows only unless asked otherwise."""
    mentions_active = any(clause.strip().lower().startswith("active ") for clause in where)
    if entity in NAME_LISTS and not mentions_active:
        return [*where, ALL_ACTIVE_STATES]
    return list(where)


def _where(where: Sequence[str]) -> str:
    return "WHERE " + " AND ".join(where) if where else ""
