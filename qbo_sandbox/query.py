"""The QBO query language subset: a tokenizer, a recursive-descent parser and an evaluator.

``SELECT * | COUNT(*) FROM Entity [WHERE p op v [AND ...]] [ORDERBY p [ASC|DESC], ...] [STARTPOSITION n]
[MAXRESULTS m]`` with ``= < > <= >= IN LIKE``. Keywords and property names are case-insensitive. Errors raise
:class:`QueryError`, answered as 400 / code 4000.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from qbo_sandbox.clock import parse_instant
from qbo_sandbox.index import DATE_LIKE, Entry, TimeIndex, entry_instant

Value = str | Decimal | bool

KEYWORDS = frozenset(
    [
        "SELECT",
        "FROM",
        "WHERE",
        "AND",
        "OR",
        "NOT",
        "IN",
        "LIKE",
        "ORDERBY",
        "ORDER",
        "BY",
        "ASC",
        "DESC",
        "STARTPOSITION",
        "MAXRESULTS",
        "COUNT",
        "TRUE",
        "FALSE",
    ]
)
COMPARISONS = ("<=", ">=", "=", "<", ">")
DEFAULT_MAX_RESULTS = 100
MAX_RESULTS_CAP = 1000

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      |(?P<string>'(?:[^'\\]|\\.)*')
      |(?P<number>-?\d+(?:\.\d+)?)
      |(?P<op><=|>=|<>|!=|=|<|>)
      |(?P<punct>[*,()])
      |(?P<word>[A-Za-z_][A-Za-z0-9_.]*)""",
    re.VERBOSE,
)
LAST_UPDATED = ("metadata", "lastupdatedtime")
ID = ("id",)


class QueryError(Exception):
    """A query that cannot be parsed (``QueryParserError``) or validated (``QueryValidationError``)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class Token:
    kind: str  # "keyword", "word", "string", "number", "op", "punct", "eof"
    text: str
    value: Value | None
    column: int


@dataclass(frozen=True)
class Condition:
    """One ``path op value(s)`` predicate; ``path`` is lower-cased."""

    path: tuple[str, ...]
    op: str
    values: tuple[Value, ...]


@dataclass
class Query:
    entity: str
    count: bool = False
    conditions: list[Condition] = field(default_factory=list)
    order: list[tuple[tuple[str, ...], bool]] = field(default_factory=list)
    start_position: int = 1
    max_results: int = DEFAULT_MAX_RESULTS


def _unescape(literal: str) -> str:
    return re.sub(r"\\(.)", r"\1", literal[1:-1], flags=re.DOTALL)


def tokenize(text: str) -> list[Token]:
    """Split a statement into tokens; an unknown character is a parse error."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise QueryError(
                f'QueryParserError: Lexical error at line 1, column {pos + 1}.  Encountered: "{text[pos]}"'
            )
        kind = match.lastgroup or ""
        raw = match.group()
        column = pos + 1
        pos = match.end()
        if kind == "ws":
            continue
        if kind == "string":
            tokens.append(Token("string", raw, _unescape(raw), column))
        elif kind == "number":
            tokens.append(Token("number", raw, Decimal(raw), column))
        elif kind == "word" and raw.upper() in KEYWORDS:
            upper = raw.upper()
            value = upper == "TRUE" if upper in ("TRUE", "FALSE") else None
            tokens.append(Token("keyword", upper, value, column))
        else:
            tokens.append(Token(kind, raw, None, column))
    tokens.append(Token("eof", "<EOF>", None, len(text) + 1))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.pos = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.pos]

    def fail(self, expecting: str) -> QueryError:
        token = self.current
        return QueryError(
            f'QueryParserError: Encountered " {token.text} " at line 1, column {token.column}.\n'
            f"Was expecting: {expecting}"
        )

    def next(self) -> Token:
        token = self.current
        self.pos += 1
        return token

    def at_keyword(self, *words: str) -> bool:
        return self.current.kind == "keyword" and self.current.text in words

    def at_punct(self, symbol: str) -> bool:
        return self.current.kind == "punct" and self.current.text == symbol

    def keyword(self, word: str) -> None:
        if not self.at_keyword(word):
            raise self.fail(f'"{word}"')
        self.next()

    def punct(self, symbol: str) -> None:
        if not self.at_punct(symbol):
            raise self.fail(f'"{symbol}"')
        self.next()

    def name(self) -> str:
        if self.current.kind != "word":
            raise self.fail("<IDENTIFIER>")
        return self.next().text

    def integer(self) -> int:
        token = self.current
        if (
            token.kind != "number"
            or not isinstance(token.value, Decimal)
            or token.value != token.value.to_integral()
        ):
            raise self.fail("<INTEGER>")
        self.next()
        return int(token.value)

    def value(self) -> Value:
        token = self.current
        if token.kind in ("string", "number") or (
            token.kind == "keyword" and token.text in ("TRUE", "FALSE")
        ):
            self.next()
            assert token.value is not None
            return token.value
        raise self.fail("<STRING> | <NUMBER> | true | false")

    def parse(self) -> Query:
        self.keyword("SELECT")
        count = self.projection()
        self.keyword("FROM")
        query = Query(entity=self.name(), count=count)
        if self.at_keyword("WHERE"):
            self.next()
            query.conditions.append(self.condition())
            while self.at_keyword("AND"):
                self.next()
                query.conditions.append(self.condition())
        if self.at_keyword("ORDERBY", "ORDER"):
            if self.next().text == "ORDER":
                self.keyword("BY")
            query.order.append(self.ordering())
            while self.at_punct(","):
                self.next()
                query.order.append(self.ordering())
        seen: set[str] = set()
        while self.at_keyword("STARTPOSITION", "MAXRESULTS") and self.current.text not in seen:
            word = self.next().text
            seen.add(word)
            number = self.integer()
            if word == "STARTPOSITION":
                query.start_position = max(1, number)
            else:
                query.max_results = min(max(1, number), MAX_RESULTS_CAP)
        if self.current.kind != "eof":
            raise self.fail('"AND" | "ORDERBY" | "STARTPOSITION" | "MAXRESULTS" | <EOF>')
        return query

    def projection(self) -> bool:
        if self.at_keyword("COUNT"):
            self.next()
            self.punct("(")
            self.punct("*")
            self.punct(")")
            return True
        if self.at_punct("*"):
            self.next()
        else:
            self.name()
        while self.at_punct(","):
            self.next()
            self.name()
        return False

    def condition(self) -> Condition:
        path = tuple(self.name().lower().split("."))
        token = self.current
        if token.kind == "op" and token.text in COMPARISONS:
            self.next()
            return Condition(path, token.text, (self.value(),))
        if self.at_keyword("LIKE"):
            self.next()
            if self.current.kind != "string":
                raise self.fail("<STRING>")
            return Condition(path, "LIKE", (self.value(),))
        if self.at_keyword("IN"):
            self.next()
            self.punct("(")
            values = [self.value()]
            while self.at_punct(","):
                self.next()
                values.append(self.value())
            self.punct(")")
            return Condition(path, "IN", tuple(values))
        raise self.fail('"=" | "<" | ">" | "<=" | ">=" | "IN" | "LIKE"')

    def ordering(self) -> tuple[tuple[str, ...], bool]:
        path = tuple(self.name().lower().split("."))
        descending = False
        if self.at_keyword("ASC", "DESC"):
            descending = self.next().text == "DESC"
        return path, descending


def parse(text: str) -> Query:
    """Parse a statement into a :class:`Query`; raises :class:`QueryError`."""
    return _Parser(text).parse()


def resolve(obj: Any, path: Iterable[str]) -> Any:
    """The value at a lower-cased dotted path, matching keys case-insensitively; None when absent. A reference
    (``{"value": id, "name": …}``, e.g. ``CustomerRef``) stands for its id, as in ``WHERE CustomerRef = '42'``."""
    for part in path:
        if not isinstance(obj, dict):
            return None
        obj = next((value for key, value in obj.items() if key.lower() == part), None)
    if isinstance(obj, dict) and "value" in obj:
        return obj["value"]
    return obj


def _comparable(field_value: Any, literal: Value) -> tuple[Any, Any] | None:
    """Coerce a stored value and a literal to one comparable type, or None when they cannot be compared."""
    if isinstance(field_value, bool) or isinstance(literal, bool):
        as_bool = {"true": True, "false": False}
        left = field_value if isinstance(field_value, bool) else as_bool.get(str(field_value).lower())
        right = literal if isinstance(literal, bool) else as_bool.get(str(literal).lower())
        return None if left is None or right is None else (left, right)
    if isinstance(field_value, int | Decimal) or isinstance(literal, Decimal):
        try:
            return Decimal(str(field_value)), Decimal(str(literal))
        except InvalidOperation:
            return None
    if isinstance(field_value, str) and isinstance(literal, str):
        if DATE_LIKE.match(field_value) and DATE_LIKE.match(literal):
            try:
                return parse_instant(field_value), parse_instant(literal)
            except ValueError:
                pass
        return field_value.casefold(), literal.casefold()
    return None


def _like(field_value: Any, pattern: Value) -> bool:
    if not isinstance(field_value, str) or not isinstance(pattern, str):
        return False
    regex = ".*".join(re.escape(part) for part in pattern.casefold().split("%"))
    return re.fullmatch(regex, field_value.casefold(), flags=re.DOTALL) is not None


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}


def matches(obj: dict[str, Any], condition: Condition) -> bool:
    """Whether one object satisfies one condition."""
    field_value = resolve(obj, condition.path)
    if condition.op == "LIKE":
        return _like(field_value, condition.values[0])
    op = "=" if condition.op == "IN" else condition.op
    for literal in condition.values:
        pair = _comparable(field_value, literal)
        if pair is not None and _COMPARE[op](*pair):
            return True
    return False


def sort_key(value: Any) -> tuple[int, Any]:
    """An ordering key: missing values first, then numbers, date-times, strings (case-insensitive)."""
    if value is None:
        return 0, 0
    if isinstance(value, bool):
        return 1, Decimal(int(value))
    if isinstance(value, int | Decimal):
        return 1, Decimal(value)
    text = str(value)
    if DATE_LIKE.match(text):
        try:
            return 2, parse_instant(text).timestamp()
        except ValueError:
            pass
    if text.isdigit():
        return 1, Decimal(text)
    return 3, text.casefold()


def _path_key(path: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[int, Any]]:
    return lambda obj: sort_key(resolve(obj, path))


def validate(query: Query, known_fields: Iterable[str]) -> None:
    """Check property names against the entity's fields and the Id operator rule."""
    known = {name.lower() for name in known_fields}
    paths = [c.path for c in query.conditions] + [path for path, _ in query.order]
    for path in paths:
        if path[0] not in known:
            raise QueryError(f"QueryValidationError: property '{'.'.join(path)}' is not queryable")
    for condition in query.conditions:
        if condition.path == ("id",) and condition.op not in ("=", "IN"):
            raise QueryError(
                f"QueryValidationError: operator {condition.op} is not supported for property 'Id'"
            )


def run(query: Query, objects: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Filter, order and page objects; returns (page, total matching rows)."""
    rows = [obj for obj in objects if all(matches(obj, c) for c in query.conditions)]
    rows.sort(key=lambda obj: sort_key(obj.get("Id")))
    for path, descending in reversed(query.order):
        rows.sort(key=_path_key(path), reverse=descending)
    start = query.start_position - 1
    return rows[start : start + query.max_results], len(rows)


# -- evaluation over a TimeIndex ---------------------------------------------------------------------------------
@dataclass
class Bounds:
    """The instants ``MetaData.LastUpdatedTime`` conditions allow (None: unbounded)."""

    low: datetime | None = None
    low_inclusive: bool = True
    high: datetime | None = None
    high_inclusive: bool = True

    def add(self, op: str, instant: datetime) -> None:
        """Narrow the bounds by ``LastUpdatedTime op instant``."""
        if op in (">", ">=", "=") and (
            self.low is None or instant > self.low or (instant == self.low and op == ">")
        ):
            self.low, self.low_inclusive = instant, op != ">"
        if op in ("<", "<=", "=") and (
            self.high is None or instant < self.high or (instant == self.high and op == "<")
        ):
            self.high, self.high_inclusive = instant, op != "<"

    def admit(self, instant: datetime) -> bool:
        """Whether an instant lies within the bounds."""
        if self.low is not None and (instant < self.low or (instant == self.low and not self.low_inclusive)):
            return False
        return self.high is None or instant < self.high or (instant == self.high and self.high_inclusive)


def split_bounds(conditions: Iterable[Condition]) -> tuple[Bounds, list[Condition]]:
    """The ``LastUpdatedTime`` comparisons with one date-time literal as bounds, and the other conditions.

    For objects whose ``LastUpdatedTime`` is a date-time (see :class:`~index.TimeIndex`) a bound selects exactly
    the objects :func:`matches` would accept for that condition.
    """
    bounds, rest = Bounds(), []
    for condition in conditions:
        instant = None
        literal = condition.values[0] if len(condition.values) == 1 else None
        bound = condition.path == LAST_UPDATED and condition.op in COMPARISONS
        if bound and isinstance(literal, str) and DATE_LIKE.match(literal):
            try:
                instant = parse_instant(literal)
            except ValueError:
                instant = None
        if instant is None:
            rest.append(condition)
        else:
            bounds.add(condition.op, instant)
    return bounds, rest


def _time_walk(entries: list[Entry], i: int, j: int, time_desc: bool, id_desc: bool) -> Iterator[str]:
    """The keys of ``entries[i:j]`` by instant (descending when ``time_desc``), ties by Id (``id_desc``)."""
    if time_desc == id_desc:
        for n in range(j - 1, i - 1, -1) if time_desc else range(i, j):
            yield entries[n][2]
        return
    n = j - 1 if time_desc else i
    while i <= n < j:  # runs of one instant, each walked against the index's Id order
        instant = entries[n][0]
        if time_desc:
            first = bisect_left(entries, instant, i, n + 1, key=entry_instant)
            run, n = range(first, n + 1), first - 1
        else:
            after = bisect_right(entries, instant, n, j, key=entry_instant)
            run, n = range(after - 1, n - 1, -1), after
        for m in run:
            yield entries[m][2]


def run_indexed(
    query: Query, index: TimeIndex, keep: Callable[[str, dict[str, Any]], bool]
) -> tuple[list[dict[str, Any]], int]:
    """:func:`run` over a regular index's store, restricted to the objects ``keep`` accepts — the same answer,
    without walking, parsing and sorting every object. Pages ordered by ``LastUpdatedTime`` (then Id) or by Id are
    read in order and stop at the page's end; their ``total`` is only counted for ``COUNT(*)`` (else -1)."""
    bounds, rest = split_bounds(query.conditions)
    store, entries = index.store, index.entries
    i, j = index.span(bounds.low, bounds.low_inclusive, bounds.high, bounds.high_inclusive)

    def wanted(key: str) -> dict[str, Any] | None:
        obj = store[key]
        if keep(key, obj) and all(matches(obj, c) for c in rest):
            return obj
        return None

    if query.count:
        return [], sum(1 for n in range(i, j) if wanted(entries[n][2]) is not None)
    order, start = query.order, query.start_position - 1
    keys: Iterable[str] | None = None
    if order and order[0][0] == LAST_UPDATED and (len(order) == 1 or order[1][0] == ID):
        keys = _time_walk(entries, i, j, order[0][1], len(order) > 1 and order[1][1])
    elif (not order or order[0][0] == ID) and (j - i) ** 2 > (start + query.max_results) * len(entries):
        by_id = index.by_id()  # most objects are in the bounds: walk by Id, check the bounds on the way
        ids = reversed(by_id) if order and order[0][1] else iter(by_id)
        stamps = index.stamps
        keys = (key for _, key in ids if bounds.admit(stamps[key][0]))
    if keys is None:  # any other order: sort what is in the bounds, as run() does
        rows = [obj for n in range(i, j) if (obj := wanted(entries[n][2])) is not None]
        return run(replace(query, conditions=[]), rows)
    page: list[dict[str, Any]] = []
    for key in keys:
        obj = wanted(key)
        if obj is None:
            continue
        if start:
            start -= 1
            continue
        page.append(obj)
        if len(page) >= query.max_results:
            break
    return page, -1
