"""Property tests for the query parser and evaluator against an independent Python reference filter."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from qbo_sandbox import query as qlang

NAMES = st.text(alphabet=st.sampled_from(list("abcAB'\\ é%_")), min_size=0, max_size=6)
AMOUNTS = st.decimals(min_value=-1000, max_value=1000, places=2, allow_nan=False, allow_infinity=False)


def quote(text: str) -> str:
    """A QBO string literal: apostrophes and backslashes escaped with a backslash."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class Clause:
    field: str
    op: str
    values: tuple[Any, ...]

    def render(self, upper: bool) -> str:
        def literal(value: Any) -> str:
            if isinstance(value, bool):
                return "true" if value else "false"
            return str(value) if isinstance(value, Decimal) else quote(value)

        field = self.field.upper() if upper else self.field
        if self.op == "IN":
            return f"{field} {'IN' if upper else 'in'} ({', '.join(literal(v) for v in self.values)})"
        op = self.op if self.op != "LIKE" or upper else "like"
        return f"{field} {op} {literal(self.values[0])}"


def _like(text: str, pattern: str) -> bool:
    """Reference LIKE: ``%`` matches any run of characters, everything else itself (case-insensitive)."""
    if not pattern:
        return not text
    if pattern[0] == "%":
        return any(_like(text[i:], pattern[1:]) for i in range(len(text) + 1))
    return bool(text) and text[0] == pattern[0] and _like(text[1:], pattern[1:])


def reference(row: dict[str, Any], clause: Clause) -> bool:
    value = {"displayname": row["DisplayName"], "balance": row["Balance"], "active": row["Active"]}[
        clause.field.lower()
    ]
    if clause.op == "LIKE":
        return _like(value.casefold(), clause.values[0].casefold())
    if isinstance(value, str):
        value = value.casefold()
    candidates = [v.casefold() if isinstance(v, str) else v for v in clause.values]
    ops = {
        "=": lambda a, b: a == b,
        "IN": lambda a, b: a == b,
        "<": lambda a, b: a < b,
        ">": lambda a, b: a > b,
        "<=": lambda a, b: a <= b,
        ">=": lambda a, b: a >= b,
    }
    return any(ops[clause.op](value, c) for c in candidates)


name_clauses = st.builds(
    Clause,
    st.just("DisplayName"),
    st.sampled_from(["=", "<", ">", "<=", ">="]),
    st.tuples(NAMES),
)
like_clauses = st.builds(Clause, st.just("DisplayName"), st.just("LIKE"), st.tuples(NAMES))
amount_clauses = st.builds(
    Clause, st.just("Balance"), st.sampled_from(["=", "<", ">", "<=", ">="]), st.tuples(AMOUNTS)
)
in_clauses = st.builds(
    Clause, st.just("DisplayName"), st.just("IN"), st.lists(NAMES, min_size=1, max_size=3).map(tuple)
)
active_clauses = st.builds(Clause, st.just("Active"), st.just("="), st.tuples(st.booleans()))
clauses = st.one_of(name_clauses, like_clauses, amount_clauses, in_clauses, active_clauses)
rows = st.lists(
    st.fixed_dictionaries({"DisplayName": NAMES, "Balance": AMOUNTS, "Active": st.booleans()}), max_size=8
).map(lambda items: [{**row, "Id": str(n)} for n, row in enumerate(items, start=1)])


@settings(max_examples=200, deadline=None)
@given(st.lists(clauses, min_size=1, max_size=4), rows, st.booleans())
def test_where_clauses_match_the_reference_filter(where: list[Clause], data: list[dict], upper: bool) -> None:
    glue = " AND " if upper else " and "
    statement = f"{'SELECT' if upper else 'select'} * FROM Customer WHERE " + glue.join(
        c.render(upper) for c in where
    )
    parsed = qlang.parse(statement)
    parsed.max_results = 1000
    page, total = qlang.run(parsed, data)
    expected = [row["Id"] for row in data if all(reference(row, c) for c in where)]
    assert [row["Id"] for row in page] == expected and total == len(expected)


@given(st.text(max_size=30))
def test_string_literals_round_trip(text: str) -> None:
    parsed = qlang.parse(f"SELECT * FROM Customer WHERE DisplayName = {quote(text)}")
    assert parsed.conditions[0].values == (text,)


@given(clauses, clauses)
def test_or_is_always_a_parse_error(left: Clause, right: Clause) -> None:
    try:
        qlang.parse(f"SELECT * FROM Customer WHERE {left.render(False)} OR {right.render(True)}")
    except qlang.QueryError as error:
        assert error.detail.startswith("QueryParserError: ")
    else:
        raise AssertionError("OR was accepted")


@given(st.text(max_size=60))
def test_arbitrary_text_parses_or_raises_query_error(text: str) -> None:
    with contextlib.suppress(qlang.QueryError):
        qlang.parse(text)


@given(st.integers(min_value=-5, max_value=3000), st.integers(min_value=-5, max_value=5000))
def test_paging_bounds(start: int, maximum: int) -> None:
    parsed = qlang.parse(f"select * from Item startposition {start} maxresults {maximum}")
    assert parsed.start_position == max(1, start)
    assert 1 <= parsed.max_results <= 1000
