"""Checklist 3: the query language, its 4000 errors, active-only name lists, paging and COUNT(*)."""

from __future__ import annotations

import pytest

from batchly_pipelines_tests.support.sandbox_client import Qbo, fault_code


@pytest.fixture
def people(qbo: Qbo) -> Qbo:
    for name in ("Alpha", "Beta", "Gamma", "Delta", "Zoë O'Neil"):
        qbo.customer(name)
    return qbo


def names(response: dict) -> list[str]:
    return [row["DisplayName"] for row in response.get("Customer", [])]


def test_operators(people: Qbo) -> None:
    assert names(people.query("SELECT * FROM Customer WHERE DisplayName = 'Beta'")) == ["Beta"]
    assert names(people.query("SELECT * FROM Customer WHERE DisplayName < 'Beta' ORDERBY DisplayName")) == [
        "Alpha"
    ]
    assert names(
        people.query("select * from customer where displayname >= 'Gamma' order by DisplayName desc")
    ) == [
        "Zoë O'Neil",
        "Gamma",
    ]
    assert names(people.query("SELECT * FROM Customer WHERE DisplayName LIKE '%lta'")) == ["Delta"]
    assert set(names(people.query("SELECT * FROM Customer WHERE DisplayName IN ('Alpha', 'Gamma')"))) == {
        "Alpha",
        "Gamma",
    }


def test_escaped_apostrophe(people: Qbo) -> None:
    assert names(people.query("SELECT * FROM Customer WHERE DisplayName = 'Zoë O\\'Neil'")) == ["Zoë O'Neil"]


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM Customer WHERE DisplayName = 'Alpha' OR DisplayName = 'Beta'",
        "SELECT * FROM Customer WHERE",
        "SELECT * FROM Customer GROUP BY DisplayName",
        "SELECT * FROM Customer WHERE DisplayName != 'x'",
        "SELECT * FROM Customer WHERE Id > '3'",
        "SELECT * FROM Customer WHERE Nonsense = 'x'",
        "SELECT * FROM Nonsense",
    ],
)
def test_invalid_queries_are_4000(people: Qbo, statement: str) -> None:
    response = people.get("query", query=statement)
    assert response.status_code == 400
    error = response.json()["Fault"]["Error"][0]
    assert error["code"] == "4000" and error["Message"] == "Error parsing query"
    assert error["Detail"].startswith(("QueryParserError: ", "QueryValidationError: "))
    if " OR " in statement:
        assert error["Detail"].startswith("QueryParserError: ")


def test_id_equality_and_in(people: Qbo) -> None:
    ids = [c["Id"] for c in people.query("SELECT * FROM Customer")["Customer"]]
    assert [c["Id"] for c in people.query(f"SELECT * FROM Customer WHERE Id = '{ids[1]}'")["Customer"]] == [
        ids[1]
    ]
    listed = people.query(f"SELECT * FROM Customer WHERE Id IN ('{ids[0]}', '{ids[2]}')")["Customer"]
    assert sorted(c["Id"] for c in listed) == sorted([ids[0], ids[2]])


def test_metadata_property_case_insensitive(people: Qbo) -> None:
    spelled = [
        "SELECT * FROM Customer WHERE Metadata.LastUpdatedTime >= '2000-01-01T00:00:00-08:00'",
        "SELECT * FROM Customer WHERE MetaData.LastUpdatedTime >= '2000-01-01'",
        "select * from CUSTOMER where metadata.lastupdatedtime > '2000-01-01T00:00:00Z'",
    ]
    for statement in spelled:
        assert len(people.query(statement)["Customer"]) == 5
    assert people.query("SELECT * FROM Customer WHERE Metadata.LastUpdatedTime >= '2999-01-01'") == {}


def test_paging_is_one_based_and_zero_means_one(people: Qbo) -> None:
    first = people.query("SELECT * FROM Customer ORDERBY DisplayName STARTPOSITION 1 MAXRESULTS 2")
    assert names(first) == ["Alpha", "Beta"] and first["startPosition"] == 1 and first["maxResults"] == 2
    assert names(
        people.query("SELECT * FROM Customer ORDER BY DisplayName STARTPOSITION 0 MAXRESULTS 2")
    ) == [
        "Alpha",
        "Beta",
    ]
    last = people.query("SELECT * FROM Customer ORDERBY DisplayName STARTPOSITION 5 MAXRESULTS 2")
    assert names(last) == ["Zoë O'Neil"] and last["maxResults"] == 1


def _seed_customers(qbo: Qbo, count: int) -> None:
    created = qbo.admin.seed(qbo.realm_id, customers=count, items=0, invoices=0, payments=0)
    assert len(created["Customer"]) == count


def test_maxresults_capped_at_1000(qbo: Qbo) -> None:
    _seed_customers(qbo, 1005)
    page = qbo.query("SELECT * FROM Customer MAXRESULTS 5000")
    assert page["maxResults"] == 1000 and len(page["Customer"]) == 1000
    rest = qbo.query("SELECT * FROM Customer STARTPOSITION 1001 MAXRESULTS 1000")
    assert rest["maxResults"] == 5


def test_default_max_results_is_100(qbo: Qbo) -> None:
    _seed_customers(qbo, 101)
    assert qbo.query("SELECT * FROM Customer")["maxResults"] == 100


def test_count_and_empty(people: Qbo) -> None:
    assert people.query("SELECT COUNT(*) FROM Customer") == {"totalCount": 5}
    assert people.query("SELECT count(*) FROM Customer WHERE DisplayName = 'nobody'") == {"totalCount": 0}
    assert people.query("SELECT * FROM Customer WHERE DisplayName = 'nobody'") == {}


def test_select_star_with_extra_fields(qbo: Qbo) -> None:
    item = qbo.item("Widget", Sku="W-1")
    rows = qbo.query("SELECT *, Sku FROM Item")["Item"]
    assert rows[0]["Id"] == item["Id"] and rows[0]["Sku"] == "W-1" and "UnitPrice" in rows[0]


def test_active_only_default(people: Qbo) -> None:
    beta = people.query("SELECT * FROM Customer WHERE DisplayName = 'Beta'")["Customer"][0]
    people.ok(
        people.post(
            "customer", {"Id": beta["Id"], "SyncToken": beta["SyncToken"], "sparse": True, "Active": False}
        )
    )
    assert "Beta" not in names(people.query("SELECT * FROM Customer"))
    assert "Beta" in names(people.query("SELECT * FROM Customer WHERE Active IN (true, false)"))
    assert names(people.query("SELECT * FROM Customer WHERE Active = false")) == ["Beta"]
    assert people.query("SELECT COUNT(*) FROM Customer")["totalCount"] == 4


def test_numeric_and_date_comparisons(qbo: Qbo) -> None:
    customer, item = qbo.customer(), qbo.item()
    qbo.invoice(customer, item, "50.00", TxnDate="2026-01-10")
    big = qbo.invoice(customer, item, "500.00", "250.50", TxnDate="2026-02-10")
    rows = qbo.query("SELECT * FROM Invoice WHERE TotalAmt > '100' AND TxnDate >= '2026-02-01'")["Invoice"]
    assert [r["Id"] for r in rows] == [big["Id"]]
    assert qbo.query("SELECT COUNT(*) FROM Invoice WHERE TotalAmt <= 50")["totalCount"] == 1


def test_query_error_code_helper(qbo: Qbo) -> None:
    assert (
        fault_code(qbo.get("query", query="SELECT * FROM Customer WHERE Active = true OR Active = false"))
        == "4000"
    )
