"""Indexed queries and CDC answer exactly what a brute-force evaluation over every object answers.

The realm has over a thousand customers, most of them written in same-second mode (hundreds share one
``LastUpdatedTime``), some deactivated, plus invoices deleted into tombstones. The index is built early so that the
later writes exercise its incremental upkeep.
"""

from __future__ import annotations

import functools
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from qbo_sandbox import faults
from qbo_sandbox import query as qlang
from qbo_sandbox.books import CDC_MAX_OBJECTS, Books
from qbo_sandbox.clock import PACIFIC, Clock, parse_instant
from qbo_sandbox.entities import spec_for
from qbo_sandbox.index import TimeIndex
from qbo_sandbox.seed import create_company
from qbo_sandbox.state import Event, SandboxState

WINDOW = (
    "Active IN (true, false) AND MetaData.LastUpdatedTime >= '{low}' AND MetaData.LastUpdatedTime < '{high}'"
)
ORDERS = (
    "",
    "ORDERBY MetaData.LastUpdatedTime, Id",
    "ORDERBY MetaData.LastUpdatedTime",
    "ORDERBY MetaData.LastUpdatedTime DESC",
    "ORDERBY MetaData.LastUpdatedTime DESC, Id DESC",
    "ORDERBY MetaData.LastUpdatedTime DESC, Id",
    "ORDERBY MetaData.LastUpdatedTime, Id DESC",
    "ORDERBY Metadata.LastUpdatedTime ASC, Id ASC",
    "ORDERBY Id",
    "ORDERBY Id DESC",
    "ORDERBY DisplayName DESC",
    "ORDERBY MetaData.LastUpdatedTime, DisplayName",
)


def _ignore(event: Event) -> None:
    """Events are not under test here."""


def _same_second(books: Books, on: bool) -> None:
    faults.configure(books.realm, {"same_second": on})


def _deactivate(books: Books, customer_id: str) -> None:
    current = books.realm.objects["Customer"][customer_id]
    books.update(
        "Customer", {"Id": customer_id, "SyncToken": current["SyncToken"], "Active": False, "sparse": True}
    )


@functools.cache
def _books() -> Books:
    clock = Clock()
    state = SandboxState()
    realm = create_company(state, clock, None, None)
    books = Books(realm, clock, _ignore)
    rng = random.Random(11)
    income = next(a for a in realm.objects["Account"].values() if a["AccountType"] == "Income")
    _, item = books.create("Item", {"Name": "Thing", "IncomeAccountRef": {"value": income["Id"]}})
    customers: list[str] = []

    def create(count: int) -> None:
        for _ in range(count):
            name = f"Customer {len(customers) + 1:04d} {rng.choice(['Ø', 'a', 'Z', 'é'])}"
            customers.append(books.create("Customer", {"DisplayName": name})[1]["Id"])

    for _ in range(40):  # spread over seconds
        create(1)
        clock.advance(1)
    books.query("SELECT * FROM Customer ORDERBY MetaData.LastUpdatedTime")  # the index exists from here on
    for entity in ("Customer", "Invoice"):  # and their Id order
        realm.time_index(entity).by_id()
    for group in (450, 380):  # hundreds of writes in one second, some of them deactivations
        clock.advance(5)
        _same_second(books, True)
        create(group)
        for customer_id in rng.sample(customers, 60):
            if books.realm.objects["Customer"][customer_id].get("Active", True):
                _deactivate(books, customer_id)
        _same_second(books, False)
    clock.advance(3)
    invoices = []
    for customer_id in rng.sample(customers, 30):
        if books.realm.objects["Customer"][customer_id].get("Active", True):
            line = {"DetailType": "SalesItemLineDetail", "Amount": Decimal("12.50")}
            line["SalesItemLineDetail"] = {"ItemRef": {"value": item["Id"]}}
            body = {"CustomerRef": {"value": customer_id}, "Line": [line]}
            invoices.append(books.create("Invoice", body)[1])
    _same_second(books, True)
    create(300)
    for invoice in invoices[::2]:
        books.delete("Invoice", {"Id": invoice["Id"], "SyncToken": invoice["SyncToken"]})
    _same_second(books, False)
    for customer_id in rng.sample(customers, 80):  # later versions move to later seconds
        clock.advance(rng.choice([0, 0, 1]))
        if rng.random() < 0.3:
            _deactivate(books, customer_id)
        else:
            current = books.realm.objects["Customer"][customer_id]
            books.update(
                "Customer",
                {"Id": customer_id, "SyncToken": current["SyncToken"], "Notes": "n", "sparse": True},
            )
    return books


def _brute_force(books: Books, statement: str) -> dict[str, Any]:
    """The answer of evaluating a statement over every object of the entity (the evaluator without indexes)."""
    parsed = qlang.parse(statement)
    spec = spec_for(parsed.entity)
    assert spec is not None
    hidden = books.realm.hidden or set()
    rows = [obj for key, obj in books.realm.objects[spec.name].items() if (spec.name, key) not in hidden]
    if spec.kind == "name" and not any(c.path == ("active",) for c in parsed.conditions):
        rows = [obj for obj in rows if obj.get("Active") is not False]
    page, total = qlang.run(parsed, rows)
    if parsed.count:
        return {"totalCount": total}
    if not page:
        return {}
    return {spec.name: page, "startPosition": parsed.start_position, "maxResults": len(page)}


def _instants(books: Books) -> list[datetime]:
    store = books.realm.objects["Customer"]
    return sorted({parse_instant(obj["MetaData"]["LastUpdatedTime"]) for obj in store.values()})


def _literal(instant: datetime, form: int) -> str:
    """An instant as a query literal: UTC, Pacific (as MetaData shows it), naive Pacific, or a bare date."""
    if form == 0:
        return instant.astimezone(UTC).isoformat()
    if form == 1:
        return instant.astimezone(PACIFIC).isoformat()
    if form == 2:
        return instant.astimezone(PACIFIC).replace(tzinfo=None).isoformat()
    return instant.astimezone(PACIFIC).date().isoformat()


def _statements(books: Books) -> list[str]:
    rng = random.Random(3)
    instants = _instants(books)
    crowded = sorted(
        instants,
        key=lambda t: (
            -sum(
                1
                for o in books.realm.objects["Customer"].values()
                if parse_instant(o["MetaData"]["LastUpdatedTime"]) == t
            )
        ),
    )[:3]
    points = [*crowded, instants[0], instants[-1], instants[len(instants) // 2]]
    points += [t + timedelta(seconds=d) for t in crowded for d in (-1, 1)]
    statements = []
    for _ in range(160):
        low, high = sorted(rng.sample(points, 2))
        where = WINDOW.format(
            low=_literal(low, rng.choice([0, 0, 1, 2])), high=_literal(high, rng.choice([0, 1]))
        )
        if rng.random() < 0.25:  # single-sided, other operators, no Active condition (active rows only)
            op = rng.choice(["<", "<=", ">", ">=", "="])
            where = (
                f"MetaData.LastUpdatedTime {op} '{_literal(rng.choice(points), rng.choice([0, 1, 2, 3]))}'"
            )
        if rng.random() < 0.1:
            where += " AND Active = false"
        start = rng.choice([1, 1, 2, 7, 100, 451, 1000])
        maximum = rng.choice([1, 7, 100, 1000])
        order = rng.choice(ORDERS)
        statements.append(
            f"SELECT * FROM Customer WHERE {where} {order} STARTPOSITION {start} MAXRESULTS {maximum}"
        )
    pull_window = WINDOW.format(
        low=_literal(instants[0], 0), high=_literal(instants[-1] + timedelta(seconds=1), 0)
    )
    for order in ORDERS:
        for start in (1, 301, 1001):
            statements.append(
                f"SELECT * FROM Customer WHERE {pull_window} {order} STARTPOSITION {start} MAXRESULTS 1000"
            )
    for first, second in (
        ("<=", "<"),
        ("<", "<="),
        (">=", ">"),
        (">", ">="),
        ("=", "<"),
        ("=", ">"),
        ("<=", ">="),
    ):
        for point in crowded[:2]:
            bound = _literal(point, 1)
            statements.append(
                f"SELECT * FROM Customer WHERE MetaData.LastUpdatedTime {first} '{bound}' "
                f"AND MetaData.LastUpdatedTime {second} '{_literal(point, 0)}' ORDERBY Id MAXRESULTS 1000"
            )
    statements += [
        f"SELECT COUNT(*) FROM Customer WHERE {pull_window}",
        f"SELECT COUNT(*) FROM Customer WHERE MetaData.LastUpdatedTime = '{_literal(crowded[0], 1)}'",
        "SELECT * FROM Customer ORDERBY MetaData.LastUpdatedTime DESC MAXRESULTS 1000",
        "SELECT * FROM Customer STARTPOSITION 200 MAXRESULTS 1000",
        "SELECT * FROM Customer WHERE DisplayName LIKE '%Ø' ORDERBY MetaData.LastUpdatedTime DESC MAXRESULTS 50",
        "SELECT * FROM Customer WHERE MetaData.LastUpdatedTime > 'soon' MAXRESULTS 1000",
        "SELECT * FROM Customer WHERE MetaData.LastUpdatedTime IN ('2020-01-01', 'x') MAXRESULTS 1000",
        "SELECT * FROM Invoice ORDERBY MetaData.LastUpdatedTime DESC",
        "SELECT * FROM Item WHERE MetaData.LastUpdatedTime >= '2000-01-01'",
    ]
    return statements


def test_the_realm_has_crowded_seconds_and_deactivated_customers() -> None:
    books = _books()
    customers = list(books.realm.objects["Customer"].values())
    per_second: dict[str, int] = {}
    for obj in customers:
        per_second[obj["MetaData"]["LastUpdatedTime"]] = (
            per_second.get(obj["MetaData"]["LastUpdatedTime"], 0) + 1
        )
    assert len(customers) > 1100 and max(per_second.values()) > 300
    assert sum(1 for obj in customers if obj.get("Active") is False) > 50
    assert books.realm.tombstones["Invoice"]


def test_the_kept_up_index_equals_a_fresh_one() -> None:
    books = _books()
    for entity in ("Customer", "Invoice"):
        for tombstones in (False, True):
            kept = books.realm.time_index(entity, tombstones)
            store = (books.realm.tombstones if tombstones else books.realm.objects)[entity]
            fresh = TimeIndex(store)
            assert kept.regular and kept.entries == fresh.entries and kept.stamps == fresh.stamps
            assert kept.by_id() == sorted((int(key), key) for key in store)


def test_page_queries_equal_the_brute_force_answer() -> None:
    books = _books()
    for statement in _statements(books):
        assert books.query(statement) == _brute_force(books, statement), statement


def test_the_pull_keyset_page_is_ordered_by_time_then_id() -> None:
    """An independent reference for the pull's statement and its DESC twin: filter and sort by hand."""
    books = _books()
    instants = _instants(books)
    low, high = instants[1], instants[-2]
    rows = [
        obj
        for obj in books.realm.objects["Customer"].values()
        if low <= parse_instant(obj["MetaData"]["LastUpdatedTime"]) < high
    ]
    assert any(obj.get("Active") is False for obj in rows)

    def key(obj: dict[str, Any]) -> tuple[datetime, int]:
        return parse_instant(obj["MetaData"]["LastUpdatedTime"]), int(obj["Id"])

    ascending = [obj["Id"] for obj in sorted(rows, key=key)]
    descending = [obj["Id"] for obj in sorted(rows, key=lambda obj: (-key(obj)[0].timestamp(), key(obj)[1]))]
    where = WINDOW.format(low=_literal(low, 0), high=_literal(high, 1))
    for order, expected in (
        ("MetaData.LastUpdatedTime, Id", ascending),
        ("MetaData.LastUpdatedTime DESC", descending),
        ("MetaData.LastUpdatedTime DESC, Id DESC", ascending[::-1]),
    ):
        for start in (1, 250, 1000):
            answer = books.query(
                f"SELECT * FROM Customer WHERE {where} ORDERBY {order} STARTPOSITION {start} MAXRESULTS 300"
            )
            assert [obj["Id"] for obj in answer.get("Customer", [])] == expected[start - 1 : start + 299]


def test_objects_of_a_running_batch_stay_hidden() -> None:
    books = _books()
    hidden_ids = list(books.realm.objects["Customer"])[::7]
    books.realm.hidden = {("Customer", key) for key in hidden_ids}
    try:
        for statement in _statements(books)[:40]:
            assert books.query(statement) == _brute_force(books, statement), statement
    finally:
        books.realm.hidden = None


def _cdc_brute_force(books: Books, entities: list[str], since: datetime) -> list[dict[str, Any]]:
    changed = []
    for name in entities:
        for store in (books.realm.objects[name], books.realm.tombstones[name]):
            for obj in store.values():
                updated = parse_instant(obj["MetaData"]["LastUpdatedTime"])
                if updated >= since:
                    changed.append((updated, int(obj["Id"]), name, obj))
    changed.sort(key=lambda row: (row[0], row[1]))
    grouped: dict[str, list[dict[str, Any]]] = {}
    for _, _, name, obj in changed[:CDC_MAX_OBJECTS]:
        grouped.setdefault(name, []).append(obj)
    answer = [
        {name: rows, "startPosition": 1, "maxResults": len(rows)}
        for name in dict.fromkeys(entities)
        if (rows := grouped.get(name))
    ]
    return answer or [{}]


def test_cdc_equals_the_brute_force_answer() -> None:
    books = _books()
    instants = _instants(books)
    for since in (
        instants[0],
        instants[len(instants) // 3],
        instants[-1],
        instants[-1] + timedelta(seconds=1),
    ):
        for entities in (["Customer"], ["Invoice", "Customer"], ["Customer", "Invoice", "Item"]):
            changed_since = since.astimezone(PACIFIC).isoformat()
            assert books.cdc(entities, changed_since) == _cdc_brute_force(books, entities, since)
