"""The query builder: escaping, literals, composition — and that the sandbox finds what the escaped literal names."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchly_pipelines.quickbooks import query as q
from batchly_pipelines.quickbooks.client import QuickBooksClient, WriteOp


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("plain", "'plain'"),
        ("O'Brien", r"'O\'Brien'"),
        ("back\\slash", r"'back\\slash'"),
        ("\\'", r"'\\\''"),
        ("", "''"),
    ],
)
def test_quote_escapes_backslash_then_apostrophe(text: str, quoted: str) -> None:
    assert q.quote(text) == quoted


@given(st.text())
def test_quoted_strings_unescape_to_the_original(text: str) -> None:
    quoted = q.quote(text)
    assert quoted[0] == quoted[-1] == "'"
    body, out, i = quoted[1:-1], [], 0
    while i < len(body):
        if body[i] == "\\":
            out.append(body[i + 1])
            i += 2
        else:
            assert body[i] != "'", "an unescaped apostrophe would end the literal"
            out.append(body[i])
            i += 1
    assert "".join(out) == text


def test_literals() -> None:
    assert q.literal(True) == "true" and q.literal(False) == "false"
    assert q.literal(Decimal("12.50")) == "12.50" and q.literal(7) == "7"
    assert q.literal(date(2026, 3, 1)) == "'2026-03-01'"
    pacific = timezone(timedelta(hours=-8))
    assert q.literal(datetime(2026, 3, 1, 4, 5, 6, 999_999, tzinfo=pacific)) == "'2026-03-01T12:05:06+00:00'"
    with pytest.raises(ValueError, match="naive"):
        q.literal(datetime(2026, 3, 1))


def test_conditions_and_statements() -> None:
    assert q.condition("Id", "in", ["1", "2"]) == "Id IN ('1', '2')"
    assert q.condition("DisplayName", "LIKE", "O'B%") == r"DisplayName LIKE 'O\'B%'"
    for bad in (lambda: q.condition("Id", "!=", "1"), lambda: q.condition("Id", "IN", "12")):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(ValueError):
        q.condition("Id", "IN", [])
    statement = q.select("Invoice", ["TotalAmt > 10", "Balance > 0"], "Id", 1001, 1000)
    assert (
        statement
        == "SELECT * FROM Invoice WHERE TotalAmt > 10 AND Balance > 0 ORDERBY Id STARTPOSITION 1001 MAXRESULTS 1000"
    )
    assert q.count("Item") == "SELECT COUNT(*) FROM Item"
    with pytest.raises(ValueError):
        q.select("Item", max_results=1001)


def test_name_lists_include_inactive_unless_active_is_constrained() -> None:
    assert q.with_all_active_states("Customer", ["Id = '1'"]) == ["Id = '1'", "Active IN (true, false)"]
    assert q.with_all_active_states("Customer", ["Active = false"]) == ["Active = false"]
    assert q.with_all_active_states("Invoice", []) == []


def test_escaped_names_match_exactly_in_the_sandbox(client: QuickBooksClient) -> None:
    names = ["O'Brien's \\ Sons", "Café D'Angelo", "Plain Name", "back\\'slash"]
    ops = [WriteOp(n, "Customer", "create", {"DisplayName": n}, f"q-{i}") for i, n in enumerate(names)]
    assert all(r.ok for r in client.write_batch(ops))
    for name in names:
        found = list(client.query_all("Customer", [q.condition("DisplayName", "=", name)]))
        assert [c["DisplayName"] for c in found] == [name]
    like = list(client.query_all("Customer", [q.condition("DisplayName", "LIKE", "O'Brien%")]))
    assert [c["DisplayName"] for c in like] == ["O'Brien's \\ Sons"]
    since = datetime.now(UTC) - timedelta(minutes=5)
    assert client.count("Customer", [q.condition("MetaData.LastUpdatedTime", ">=", since)]) == len(names)
