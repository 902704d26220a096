"""Invoices QuickBooks holds but Batchly never recorded, corrections of corrections and draft corrections.

A "lost create" is a create QuickBooks applied whose checkpoint never committed (the run died in between): Batchly
still shows the invoice unpushed, QuickBooks bills it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.services.push.organization import PushStats
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.queue import RetryPolicy, SyncQueue
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.push import (
    Books,
    invoice_row,
    lose_invoice_checkpoints,
    make_due,
    queue_status,
    totals,
    update,
)


def _names(engine: Engine, org: int) -> tuple[int, int]:
    with engine.begin() as conn:
        customer, item = f.customer(conn, org), f.item(conn, org)
    return customer, item


def _invoice(
    engine: Engine, org: int, customer: int, item: int, doc_number: str, lines: int = 2, **values: Any
) -> int:
    with engine.begin() as conn:
        invoice = f.invoice(conn, org, customer, item, doc_number=doc_number, lines=lines)
        if values:
            conn.execute(sa.update(s.invoices).where(s.invoices.c.id == invoice).values(**values))
    return invoice


def test_void_of_an_invoice_whose_create_was_never_recorded_voids_it_in_quickbooks(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    customer, item = _names(engine, org)
    push()
    invoice = _invoice(engine, org, customer, item, "1001")
    lose_invoice_checkpoints(engine, push, monkeypatch)
    assert invoice_row(engine, invoice)["qbo_id"] is None and totals(books) == {"1001": [Decimal("40.40")]}

    update(engine, s.invoices, invoice, status="void")
    stats = push()

    assert stats.actions["invoice.void"] == 1  # the dead run's queue row comes back too: a skip
    assert totals(books) == {"1001": [Decimal("0")]}
    row = invoice_row(engine, invoice)
    assert row["sync_status"] == "voided" and row["qbo_id"] == books.by_doc_number()["1001"][0]["Id"]
    assert queue_status(engine, "invoice", invoice) == ("done", None)
    assert push().actions == {}


def test_correction_of_an_invoice_whose_create_was_never_recorded_voids_it(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    customer, item = _names(engine, org)
    push()
    old = _invoice(engine, org, customer, item, "1001")
    lose_invoice_checkpoints(engine, push, monkeypatch)

    new = _invoice(engine, org, customer, item, "1001-C", lines=3, replaces_invoice_id=old)
    stats = push()

    assert stats.actions == {"invoice.skip": 1, "invoice.void": 1, "invoice.create": 1}
    assert totals(books) == {"1001": [Decimal("0")], "1001-C": [Decimal("60.60")]}
    assert (
        invoice_row(engine, old)["sync_status"] == "voided"
        and invoice_row(engine, new)["sync_status"] == "synced"
    )
    assert queue_status(engine, "invoice", old) == ("done", None)
    assert queue_status(engine, "invoice", new) == ("done", None)
    assert push().actions == {}


@pytest.mark.parametrize("unique_doc_numbers", [False, True])
def test_the_guard_looks_up_the_trimmed_doc_number_the_body_sends(
    engine: Engine,
    org: int,
    push: Callable[..., PushStats],
    books: Books,
    monkeypatch: pytest.MonkeyPatch,
    unique_doc_numbers: bool,
) -> None:
    books.admin.settings(books.realm_id, unique_doc_numbers=unique_doc_numbers)
    customer, item = _names(engine, org)
    push()
    invoice = _invoice(engine, org, customer, item, " 1001 ")
    lose_invoice_checkpoints(engine, push, monkeypatch)
    _invoice(engine, org, customer, item, "2001")  # the retry is grouped differently

    stats = push()

    assert stats.actions == {"invoice.link": 1, "invoice.create": 1}
    assert sorted(totals(books)) == ["1001", "2001"] and len(books.objects("Invoice")) == 2
    assert invoice_row(engine, invoice)["qbo_id"] == books.by_doc_number()["1001"][0]["Id"]


@pytest.mark.parametrize("doc_number", ["", "   "])
def test_a_blank_doc_number_is_refused_before_quickbooks_numbers_it(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, doc_number: str
) -> None:
    customer, item = _names(engine, org)
    invoice = _invoice(engine, org, customer, item, doc_number)

    stats = push()

    assert stats.dead == 1 and books.objects("Invoice") == []
    status, error = queue_status(engine, "invoice", invoice)
    assert status == "dead" and error is not None
    assert error.startswith(f"invoice {invoice} doc_number: required")
    assert invoice_row(engine, invoice)["sync_status"] == "error"


def test_a_correction_of_a_correction_made_before_the_push_voids_the_original(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    customer, item = _names(engine, org)
    original = _invoice(engine, org, customer, item, "1001")
    push()
    first = _invoice(engine, org, customer, item, "1001-A", lines=3, replaces_invoice_id=original)
    second = _invoice(engine, org, customer, item, "1001-B", lines=1, replaces_invoice_id=first)

    stats = push()

    assert stats.actions == {"invoice.skip": 1, "invoice.void": 1, "invoice.create": 1}
    assert totals(books) == {"1001": [Decimal("0")], "1001-B": [Decimal("20.20")]}
    assert invoice_row(engine, original)["sync_status"] == "voided"
    assert (
        invoice_row(engine, first)["qbo_id"] is None
        and invoice_row(engine, second)["sync_status"] == "synced"
    )
    assert [queue_status(engine, "invoice", i) for i in (first, second)] == [("done", None)] * 2
    assert push().actions == {}


def test_every_superseded_invoice_of_a_chain_that_reached_quickbooks_is_voided(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    customer, item = _names(engine, org)
    original = _invoice(engine, org, customer, item, "1001")
    push()
    first = _invoice(engine, org, customer, item, "1001-A", lines=3, replaces_invoice_id=original)
    lose_invoice_checkpoints(  # 1001 voided first (recorded), then 1001-A created, unrecorded
        engine, push, monkeypatch, when=lambda outcomes: any(o.action == "create" for o in outcomes)
    )
    assert totals(books) == {"1001": [Decimal("0")], "1001-A": [Decimal("60.60")]}
    second = _invoice(engine, org, customer, item, "1001-B", lines=1, replaces_invoice_id=first)

    push()

    assert totals(books) == {"1001": [Decimal("0")], "1001-A": [Decimal("0")], "1001-B": [Decimal("20.20")]}
    assert [invoice_row(engine, i)["sync_status"] for i in (original, first, second)] == [
        "voided",
        "voided",
        "synced",
    ]
    assert queue_status(engine, "invoice", second) == ("done", None)


@pytest.mark.parametrize("status", ["draft", "void"])
def test_an_invoice_named_by_a_draft_or_void_correction_is_still_pushed(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, status: str
) -> None:
    customer, item = _names(engine, org)
    invoice = _invoice(engine, org, customer, item, "1001")
    correction = _invoice(
        engine, org, customer, item, "1001-A", lines=3, replaces_invoice_id=invoice, status=status
    )

    push()

    assert totals(books) == {"1001": [Decimal("40.40")]}
    assert invoice_row(engine, invoice)["sync_status"] == "synced"
    with engine.begin() as conn:  # the correction is abandoned: the invoice stays billed
        conn.execute(sa.delete(s.invoice_lines).where(s.invoice_lines.c.invoice_id == correction))
        conn.execute(sa.delete(s.invoices).where(s.invoices.c.id == correction))
    push()
    assert totals(books) == {"1001": [Decimal("40.40")]}


def test_an_invoice_replaced_by_an_open_correction_in_the_same_push_is_never_sent(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    customer, item = _names(engine, org)
    invoice = _invoice(engine, org, customer, item, "1001")
    correction = _invoice(engine, org, customer, item, "1001-A", lines=3, replaces_invoice_id=invoice)

    stats = push()

    assert stats.actions["invoice.create"] == 1 and stats.actions["invoice.skip"] == 1
    assert totals(books) == {"1001-A": [Decimal("60.60")]}
    assert queue_status(engine, "invoice", invoice) == ("done", None)
    assert queue_status(engine, "invoice", correction) == ("done", None)


def test_an_invoice_whose_correction_was_refused_waits_then_is_pushed(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    customer, item = _names(engine, org)
    invoice = _invoice(engine, org, customer, item, "1001")
    correction = _invoice(engine, org, customer, item, "1001-A", replaces_invoice_id=invoice, total_amount=1)

    # the original's wait is a retry an hour away: on the default, compressed backoff (tens of milliseconds here) a
    # push slowed by a loaded machine meets it due again, the correction dead by then, and rightly pushes it at once
    push(queue=SyncQueue(engine, RetryPolicy(base_delay=timedelta(hours=1))))

    assert books.objects("Invoice") == []
    assert queue_status(engine, "invoice", correction)[0] == "dead"
    status, error = queue_status(engine, "invoice", invoice)
    assert (
        status == "pending"
        and error == f"waiting for invoice {correction}, which replaces it, to reach QuickBooks"
    )
    make_due(engine)  # retry now
    push()
    assert totals(books) == {"1001": [Decimal("40.40")]}
    assert queue_status(engine, "invoice", invoice)[0] == "done"


def test_the_guard_never_links_an_invoice_edited_after_a_lost_create(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    customer, item = _names(engine, org)
    with engine.begin() as conn:
        gadget = f.item(conn, org, name="Gadget", unit_price="20.20")
    push()
    invoice = _invoice(engine, org, customer, item, "1001")
    lose_invoice_checkpoints(engine, push, monkeypatch)
    with (
        engine.begin() as conn
    ):  # still unpushed in Batchly: two lines become one line of another item, same total
        lines = s.invoice_lines
        conn.execute(sa.delete(lines).where(lines.c.invoice_id == invoice))
        conn.execute(
            sa.insert(lines).values(
                invoice_id=invoice,
                line_no=1,
                item_id=gadget,
                quantity=Decimal(2),
                unit_price=Decimal("20.20"),
                amount=Decimal("40.40"),
            )
        )

    stats = push()

    assert stats.dead >= 1 and "invoice.link" not in stats.actions and "invoice.create" not in stats.actions
    status, error = queue_status(engine, "invoice", invoice)
    assert status == "dead" and error is not None
    assert error.startswith(f"invoice {invoice} doc_number: QuickBooks already holds DocNumber '1001'")
    assert "differs from this invoice: lines" in error
    row = invoice_row(engine, invoice)
    assert row["qbo_id"] is None and row["sync_status"] == "error"
    [qbo] = books.objects("Invoice")
    assert len([line for line in qbo["Line"] if line.get("DetailType") == "SalesItemLineDetail"]) == 2
