"""A chunk's voids ride in its creates' batch call; a create that waits for one of them goes from the next claim.

A batch call is the company's scarcest budget (20 to 40 a minute). A chunk sent its voids in a call of their own, then
its creates: in a chaos run 11 of 207 batch calls carried one or two voids each (5 % of the budget). Now the voids go
first in the creates' call. A create that waits for one of them — a correction whose original is voided, an invoice
whose lost copy is — is left out of that call and is due again at once (not an attempt, not a failure): it is created
from the push's next claim, after the void is checkpointed, so a correction and its original are never both open.
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


def test_a_correction_waits_for_the_next_claim_while_its_original_is_voided_in_the_chunks_call(
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
        new = f.invoice(conn, org, customer, item, doc_number="N-0")
    update(engine, s.invoices, correction, replaces_invoice_id=original)
    update(engine, s.invoices, voided, status="void")
    calls.clear()

    stats = push()

    # one call voids both and creates what waits for neither; the correction goes once its original is void
    assert calls == [[("void", original_id), ("void", voided_id), ("create", "N-0")], [("create", "O-1-C")]]
    assert stats.actions == {"invoice.void": 2, "invoice.create": 2}
    assert (stats.failed, stats.dead) == (0, 0)
    assert totals(books) == {
        "O-1": [Decimal("0")],
        "V-1": [Decimal("0")],
        "O-1-C": [Decimal("60.60")],
        "N-0": [Decimal("40.40")],
    }
    assert [invoice_row(engine, i)["sync_status"] for i in (original, voided, correction, new)] == [
        "voided",
        "voided",
        "synced",
        "synced",
    ]
    assert queue_status(engine, "invoice", correction) == ("done", None)
