"""Voids nothing in the chunk waits for ride in the creates' batch call; a correction's void still goes first.

A batch call is the company's scarcest budget (20 to 40 a minute). A chunk sent its voids in a call of their own, then
its creates: in a chaos run 11 of 207 batch calls carried one or two voids each (5 % of the budget). An invoice set to
void (or a lost copy of a retired one) holds up no create of its chunk, so it goes in the creates' call; a void a
create waits for — the original a correction replaces, a lost copy of a renumbered invoice — is still sent and
checkpointed first, so a correction and its original are never both open.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import QuickBooksClient, WriteOp, WriteResult
from batchly_pipelines.services.push.organization import PushStats
from batchly_pipelines.store import schema as s
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.push import Books, invoice_row, queue_status, totals, update


@pytest.fixture
def calls(client: QuickBooksClient, monkeypatch: pytest.MonkeyPatch) -> list[list[tuple[str, Any]]]:
    """Every write_batch the push makes: (operation, QuickBooks Id or DocNumber) of each op."""
    made: list[list[tuple[str, Any]]] = []
    write_batch = client.write_batch

    def recording(ops: Sequence[WriteOp], **options: Any) -> list[WriteResult]:
        made.append([(op.operation, op.body.get("Id") or op.body.get("DocNumber")) for op in ops])
        return write_batch(ops, **options)

    monkeypatch.setattr(client, "write_batch", recording)
    return made


def test_an_invoice_set_to_void_rides_in_the_creates_batch_call(
    engine: Engine,
    org: int,
    push: Callable[..., PushStats],
    books: Books,
    calls: list[list[tuple[str, Any]]],
) -> None:
    with engine.begin() as conn:
        customer, item = f.customer(conn, org), f.item(conn, org)
        voided = f.invoice(conn, org, customer, item, doc_number="V-1")
    push()
    qbo_id = invoice_row(engine, voided)["qbo_id"]
    update(engine, s.invoices, voided, status="void")
    with engine.begin() as conn:
        new = [f.invoice(conn, org, customer, item, doc_number=f"N-{n}") for n in range(3)]
    calls.clear()

    stats = push()

    assert calls == [[("void", qbo_id), ("create", "N-0"), ("create", "N-1"), ("create", "N-2")]]
    assert stats.actions == {"invoice.void": 1, "invoice.create": 3}
    assert totals(books) == {
        "V-1": [Decimal("0")],
        **{f"N-{n}": [Decimal("40.40")] for n in range(3)},
    }
    assert invoice_row(engine, voided)["sync_status"] == "voided"
    assert all(invoice_row(engine, i)["sync_status"] == "synced" for i in new)
    assert queue_status(engine, "invoice", voided) == ("done", None)


def test_a_void_a_create_waits_for_goes_first_and_the_others_ride_with_the_creates(
    engine: Engine,
    org: int,
    push: Callable[..., PushStats],
    books: Books,
    calls: list[list[tuple[str, Any]]],
) -> None:
    with engine.begin() as conn:
        customer, item = f.customer(conn, org), f.item(conn, org)
        original = f.invoice(conn, org, customer, item, doc_number="O-1")
        voided = f.invoice(conn, org, customer, item, doc_number="V-1")
    push()
    original_id, voided_id = (invoice_row(engine, i)["qbo_id"] for i in (original, voided))
    with engine.begin() as conn:
        correction = f.invoice(conn, org, customer, item, doc_number="O-1-C", lines=3)
    update(engine, s.invoices, correction, replaces_invoice_id=original)
    update(engine, s.invoices, voided, status="void")
    calls.clear()

    stats = push()

    assert calls == [[("void", original_id)], [("void", voided_id), ("create", "O-1-C")]]
    assert stats.actions == {"invoice.void": 2, "invoice.create": 1}
    assert totals(books) == {"O-1": [Decimal("0")], "V-1": [Decimal("0")], "O-1-C": [Decimal("60.60")]}
    assert [invoice_row(engine, i)["sync_status"] for i in (original, voided, correction)] == [
        "voided",
        "voided",
        "synced",
    ]
