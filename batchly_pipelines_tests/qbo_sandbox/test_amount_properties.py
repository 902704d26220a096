"""Property tests for amount arithmetic: totals, balances, payments applied then removed."""

from __future__ import annotations

import random
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from qbo_sandbox.books import Books
from qbo_sandbox.clock import Clock
from qbo_sandbox.seed import create_company
from qbo_sandbox.state import Event, SandboxState
from qbo_sandbox.wire import QboError

AMOUNT = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999.99"), places=2)


def _ignore(event: Event) -> None:
    """Events are not under test here."""


def _books() -> tuple[Books, dict, dict]:
    clock = Clock()
    state = SandboxState()
    realm = create_company(state, clock, None, None)
    books = Books(realm, clock, _ignore)
    income = next(a for a in realm.objects["Account"].values() if a["AccountType"] == "Income")
    _, customer = books.create("Customer", {"DisplayName": "Prop O'Test"})
    _, item = books.create("Item", {"Name": "Thing", "IncomeAccountRef": {"value": income["Id"]}})
    return books, customer, item


def _invoice(books: Books, customer: dict, item: dict, amounts: list[Decimal]) -> dict:
    lines = [
        {
            "DetailType": "SalesItemLineDetail",
            "Amount": a,
            "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}},
        }
        for a in amounts
    ]
    return books.create("Invoice", {"CustomerRef": {"value": customer["Id"]}, "Line": lines})[1]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(AMOUNT, min_size=1, max_size=6),
    st.lists(st.integers(min_value=1, max_value=100), max_size=6),
    st.randoms(),
)
def test_payments_applied_then_deleted_restore_the_balance(
    amounts: list[Decimal], shares: list[int], rnd: random.Random
) -> None:
    books, customer, item = _books()
    invoice = _invoice(books, customer, item, amounts)
    total = sum(amounts, Decimal("0"))
    assert invoice["TotalAmt"] == total and invoice["Balance"] == total
    payments = []
    for share in shares:
        balance = books.read("Invoice", invoice["Id"])[1]["Balance"]
        amount = (balance * share / 100).quantize(Decimal("0.01"))
        if amount <= 0:
            continue
        line = {"Amount": amount, "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}
        payments.append(
            books.create(
                "Payment", {"CustomerRef": invoice["CustomerRef"], "TotalAmt": amount, "Line": [line]}
            )[1]
        )
        current = books.read("Invoice", invoice["Id"])[1]
        paid = sum((p["TotalAmt"] for p in payments), Decimal("0"))
        assert current["Balance"] == total - paid >= 0
        assert books.read("Customer", customer["Id"])[1]["Balance"] == current["Balance"]
    rnd.shuffle(payments)
    for payment in payments:
        books.delete("Payment", {"Id": payment["Id"], "SyncToken": payment["SyncToken"]})
    restored = books.read("Invoice", invoice["Id"])[1]
    assert restored["Balance"] == total and restored["LinkedTxn"] == []
    assert books.read("Customer", customer["Id"])[1]["Balance"] == total


@settings(max_examples=40, deadline=None)
@given(st.lists(AMOUNT, min_size=1, max_size=4), AMOUNT)
def test_balance_never_goes_negative(amounts: list[Decimal], attempt: Decimal) -> None:
    books, customer, item = _books()
    invoice = _invoice(books, customer, item, amounts)
    line = {"Amount": attempt, "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}
    try:
        books.create("Payment", {"CustomerRef": invoice["CustomerRef"], "TotalAmt": attempt, "Line": [line]})
        accepted = True
    except QboError as error:
        assert error.code == "6000"
        accepted = False
    assert accepted == (attempt <= invoice["TotalAmt"])
    balance = books.read("Invoice", invoice["Id"])[1]["Balance"]
    assert balance == (invoice["TotalAmt"] - attempt if accepted else invoice["TotalAmt"]) and balance >= 0


@settings(max_examples=40, deadline=None)
@given(st.lists(AMOUNT, min_size=1, max_size=5), st.lists(AMOUNT, min_size=1, max_size=5))
def test_line_replacement_recomputes_total(first: list[Decimal], second: list[Decimal]) -> None:
    books, customer, item = _books()
    invoice = _invoice(books, customer, item, first)
    lines = [
        {
            "DetailType": "SalesItemLineDetail",
            "Amount": a,
            "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}},
        }
        for a in second
    ]
    _, updated = books.update(
        "Invoice", {"Id": invoice["Id"], "SyncToken": "0", "sparse": True, "Line": lines}
    )
    assert updated["TotalAmt"] == sum(second, Decimal("0")) == updated["Balance"]
    sales = [line for line in updated["Line"] if line["DetailType"] == "SalesItemLineDetail"]
    assert [line["Amount"] for line in sales] == second
