"""Edits after a lost create leave no orphan; edits of pushed invoices are refused out loud.

A "lost create" is a create QuickBooks applied whose checkpoint never committed: Batchly still shows the invoice
unpushed (so it may still be edited), QuickBooks bills it. Every DocNumber an invoice was ever sent with is recorded
before the send, so the guard finds that copy whatever the invoice became since.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.rules.validation import IMMUTABLE_MESSAGE
from batchly_pipelines.services.push.organization import PushStats
from batchly_pipelines.store import schema as s
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.push import (
    Books,
    invoice_row,
    lose_invoice_checkpoints,
    queue_status,
    totals,
    update,
)

BILLED = Decimal("40.40")  # f.invoice's two lines
VOID = Decimal("0")


def _names(engine: Engine, org: int, push: Callable[..., PushStats]) -> tuple[int, int]:
    with engine.begin() as conn:
        customer, item = f.customer(conn, org), f.item(conn, org)
    push()
    return customer, item


def _invoice(engine: Engine, org: int, customer: int, item: int, doc_number: str) -> int:
    with engine.begin() as conn:
        return f.invoice(conn, org, customer, item, doc_number=doc_number)


def _lost(
    engine: Engine, org: int, push: Callable[..., PushStats], monkeypatch: pytest.MonkeyPatch, doc_number: str
) -> int:
    """An invoice QuickBooks created whose answer never reached Batchly."""
    customer, item = _names(engine, org, push)
    invoice = _invoice(engine, org, customer, item, doc_number)
    lose_invoice_checkpoints(engine, push, monkeypatch)
    assert invoice_row(engine, invoice)["qbo_id"] is None
    return invoice


# -- (4) a lost create, then an edit ------------------------------------------------------------------------------


def test_a_doc_number_edited_after_a_lost_create_voids_the_lost_copy_before_creating_it(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoice = _lost(engine, org, push, monkeypatch, "1001")
    update(engine, s.invoices, invoice, doc_number="1002")

    push()

    assert totals(books) == {"1001": [VOID], "1002": [BILLED]}
    row = invoice_row(engine, invoice)
    assert row["qbo_id"] == books.by_doc_number()["1002"][0]["Id"] and row["sync_status"] == "synced"
    assert queue_status(engine, "invoice", invoice) == ("done", None)
    assert push().actions == {}


@pytest.mark.parametrize("dies_at", ["void", "create"])
def test_a_renumbered_invoice_killed_again_between_void_and_create_ends_up_once(
    engine: Engine,
    org: int,
    push: Callable[..., PushStats],
    books: Books,
    monkeypatch: pytest.MonkeyPatch,
    dies_at: str,
) -> None:
    invoice = _lost(engine, org, push, monkeypatch, "1001")
    update(engine, s.invoices, invoice, doc_number="1002")
    lose_invoice_checkpoints(
        engine, push, monkeypatch, when=lambda outcomes: any(o.action == dies_at for o in outcomes)
    )

    push()

    assert totals(books) == {"1001": [VOID], "1002": [BILLED]}
    row = invoice_row(engine, invoice)
    assert row["qbo_id"] == books.by_doc_number()["1002"][0]["Id"] and row["sync_status"] == "synced"
    assert queue_status(engine, "invoice", invoice)[0] == "done"


def test_a_renumbered_invoice_whose_lost_copy_was_paid_is_not_created_again(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoice = _lost(engine, org, push, monkeypatch, "1001")
    [copy] = books.objects("Invoice")
    books.act(action="record_payment", invoice_id=copy["Id"], amount="40.40")  # the customer paid it
    update(engine, s.invoices, invoice, doc_number="1002")

    push()

    assert totals(books) == {"1001": [BILLED]}  # never billed twice
    status, error = queue_status(engine, "invoice", invoice)
    assert status == "dead" and error is not None
    assert error.startswith(
        f"invoice {invoice} doc_number: QuickBooks invoice Id {copy['Id']} (DocNumber '1001')"
    )
    assert "40.40 of 40.40 paid" in error and invoice_row(engine, invoice)["sync_status"] == "error"


def test_two_invoices_whose_doc_numbers_differ_only_in_letter_case_are_not_both_created(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    customer, item = _names(engine, org, push)
    first = _invoice(engine, org, customer, item, "ab-1")
    second = _invoice(engine, org, customer, item, "AB-1")

    push()

    assert list(books.by_doc_number()) == ["ab-1"]
    assert invoice_row(engine, first)["sync_status"] == "synced"
    status, error = queue_status(engine, "invoice", second)
    assert status == "dead" and error is not None and error.startswith(f"invoice {second} doc_number: ")
    assert invoice_row(engine, second)["sync_status"] == "error"


def test_the_guard_compares_doc_numbers_without_letter_case_as_quickbooks_does(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoice = _lost(engine, org, push, monkeypatch, "inv-7")
    update(engine, s.invoices, invoice, doc_number="INV-7")  # the same number to QuickBooks

    stats = push()

    assert stats.actions["invoice.link"] == 1 and "invoice.create" not in stats.actions
    [qbo] = books.objects("Invoice")
    assert invoice_row(engine, invoice)["qbo_id"] == qbo["Id"] and qbo["TotalAmt"] == BILLED


def test_a_void_after_a_lost_create_and_a_doc_number_edit_voids_the_lost_copy(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoice = _lost(engine, org, push, monkeypatch, "1001")
    update(engine, s.invoices, invoice, doc_number="1002")
    update(engine, s.invoices, invoice, status="void")

    push()

    assert totals(books) == {"1001": [VOID]}
    assert invoice_row(engine, invoice)["sync_status"] == "voided"
    assert queue_status(engine, "invoice", invoice) == ("done", None)


@pytest.mark.parametrize("renumbered", [False, True])
def test_a_draft_after_a_lost_create_voids_the_lost_copy(
    engine: Engine,
    org: int,
    push: Callable[..., PushStats],
    books: Books,
    monkeypatch: pytest.MonkeyPatch,
    renumbered: bool,
) -> None:
    invoice = _lost(engine, org, push, monkeypatch, "1001")
    if renumbered:
        update(engine, s.invoices, invoice, doc_number="1002")
    update(engine, s.invoices, invoice, status="draft")

    push()

    assert totals(books) == {"1001": [VOID]}  # a draft bills nobody
    row = invoice_row(engine, invoice)
    assert row["qbo_id"] is None and row["sync_status"] != "synced"
    assert queue_status(engine, "invoice", invoice) == ("done", None)
    assert push().actions == {}


def test_an_invoice_deleted_after_a_lost_create_leaves_no_orphan(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoice = _lost(engine, org, push, monkeypatch, "1001")
    with engine.begin() as conn:
        conn.execute(sa.delete(s.invoices).where(s.invoices.c.id == invoice))

    push()

    assert totals(books) == {"1001": [VOID]}
    assert queue_status(engine, "invoice", invoice)[0] == "done"


# -- (5) edits of pushed invoices -----------------------------------------------------------------------------------


def _pushed(engine: Engine, org: int, push: Callable[..., PushStats], *doc_numbers: str) -> list[int]:
    customer, item = _names(engine, org, push)
    invoices = [_invoice(engine, org, customer, item, doc) for doc in doc_numbers]
    assert push().actions["invoice.create"] == len(invoices)
    return invoices


def _refused(engine: Engine, invoice: int, field: str) -> str:
    status, error = queue_status(engine, "invoice", invoice)
    assert status == "dead" and error is not None and error.startswith(f"invoice {invoice} {field}: "), error
    assert invoice_row(engine, invoice)["sync_status"] == "error"
    return error


def test_a_pushed_invoice_set_to_draft_is_refused_and_shows_it_until_set_back(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    [invoice] = _pushed(engine, org, push, "1001")
    update(engine, s.invoices, invoice, status="draft")

    push()

    error = _refused(engine, invoice, "status")
    assert "stays open in QuickBooks" in error
    [qbo] = books.objects("Invoice")
    assert qbo["SyncToken"] == "0" and qbo["TotalAmt"] == BILLED  # untouched
    update(engine, s.invoices, invoice, status="open")
    push()
    assert invoice_row(engine, invoice)["sync_status"] == "synced"
    assert queue_status(engine, "invoice", invoice) == ("done", None)


@pytest.mark.parametrize("base_without_replaces", [False, True], ids=["base", "older-base"])
def test_replaces_invoice_id_set_on_a_pushed_invoice_never_voids_the_other(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, base_without_replaces: bool
) -> None:
    one, other = _pushed(engine, org, push, "1001", "2001")
    if base_without_replaces:  # pushed before bases recorded replaces_invoice_id
        st = s.qbo_sync_state.c
        link = (st.entity_type == "invoice") & (st.entity_id == one)
        with engine.begin() as conn:
            base = conn.execute(sa.select(st.base).where(link)).scalar_one()
            base = {k: v for k, v in base.items() if k != "replaces_invoice_id"}
            conn.execute(sa.update(s.qbo_sync_state).where(link).values(base=base))
    update(engine, s.invoices, one, replaces_invoice_id=other)

    push()

    assert totals(books) == {"1001": [BILLED], "2001": [BILLED]}
    error = _refused(engine, one, "replaces_invoice_id")
    assert f"invoice {other}" in error
    assert invoice_row(engine, other)["sync_status"] == "synced"


def test_an_edit_of_a_pushed_invoice_shows_in_sync_status_until_undone(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    [invoice] = _pushed(engine, org, push, "1001")
    lines = s.invoice_lines.c
    with engine.begin() as conn:
        conn.execute(
            sa.update(s.invoice_lines).where(lines.invoice_id == invoice).values(description="changed")
        )

    push()

    assert _refused(engine, invoice, "qbo_id") == f"invoice {invoice} qbo_id: {IMMUTABLE_MESSAGE}"
    with engine.begin() as conn:
        conn.execute(sa.update(s.invoice_lines).where(lines.invoice_id == invoice).values(description=None))
    push()
    assert invoice_row(engine, invoice)["sync_status"] == "synced"
    [qbo] = books.objects("Invoice")
    assert qbo["SyncToken"] == "0"


def test_a_voided_invoice_set_back_to_open_is_refused(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    [invoice] = _pushed(engine, org, push, "1001")
    update(engine, s.invoices, invoice, status="void")
    assert push().actions == {"invoice.void": 1}
    update(engine, s.invoices, invoice, status="open")

    push()

    assert "voided in QuickBooks" in _refused(engine, invoice, "status")
    assert totals(books) == {"1001": [VOID]}
    update(engine, s.invoices, invoice, status="void")
    assert push().actions == {"invoice.skip": 1}  # voided already: nothing sent
    assert invoice_row(engine, invoice)["sync_status"] == "voided"
