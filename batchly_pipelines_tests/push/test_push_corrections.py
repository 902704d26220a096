"""A correction and its original are never both open: the original is voided first, a paid one is refused up front;
a 503 in the DocNumber guard retries its chunk, not the run."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import ClientConfig, QuickBooksClient, WriteOp, WriteResult
from batchly_pipelines.services.connections import client_for_organization
from batchly_pipelines.services.push.invoices import InvoicePusher
from batchly_pipelines.services.push.organization import PushStats, push_organization
from batchly_pipelines.settings import Settings
from batchly_pipelines.store import schema as s
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.push import (
    LONG_LEASE,
    TIME_SCALE,
    Books,
    invoice_row,
    lose_invoice_checkpoints,
    make_due,
    queue_status,
    totals,
    update,
)

BILLED = Decimal("40.40")  # f.invoice's two lines
CORRECTED = Decimal("60.60")  # three lines
VOID = Decimal("0")


def _original(engine: Engine, org: int, push: Callable[..., PushStats]) -> tuple[int, str]:
    """A pushed invoice 1001 and its QuickBooks Id."""
    with engine.begin() as conn:
        invoice = f.invoice(conn, org, f.customer(conn, org), f.item(conn, org), doc_number="1001")
    push()
    qbo_id = invoice_row(engine, invoice)["qbo_id"]
    assert qbo_id is not None
    return invoice, str(qbo_id)


def _correction(engine: Engine, org: int, original: int) -> int:
    row = invoice_row(engine, original)
    with engine.begin() as conn:
        item = conn.execute(s.items.select()).first()
        assert item is not None
        correction = f.invoice(conn, org, row["customer_id"], item.id, doc_number="1001-C", lines=3)
    update(engine, s.invoices, correction, replaces_invoice_id=original)
    return correction


def test_a_correction_pushed_by_another_worker_voids_the_original_before_it_is_created(
    engine: Engine,
    org: int,
    client: QuickBooksClient,
    push: Callable[..., PushStats],
    books: Books,
    sent: list[WriteOp],
) -> None:
    original, qbo_id = _original(engine, org, push)
    correction = _correction(engine, org, original)
    sent.clear()

    push_organization(engine, client, org, worker="second-worker", lease=LONG_LEASE)

    assert [(op.operation, op.body.get("Id")) for op in sent] == [("void", qbo_id), ("create", None)]
    assert totals(books) == {"1001": [VOID], "1001-C": [CORRECTED]}
    assert invoice_row(engine, original)["sync_status"] == "voided"
    assert invoice_row(engine, correction)["sync_status"] == "synced"
    assert queue_status(engine, "invoice", correction) == ("done", None)


def test_a_correction_waits_while_the_void_of_its_original_fails(
    engine: Engine,
    org: int,
    client: QuickBooksClient,
    push: Callable[..., PushStats],
    books: Books,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original, _ = _original(engine, org, push)
    correction = _correction(engine, org, original)
    write_batch = client.write_batch

    def voids_answer_503(ops: Sequence[WriteOp], **options: Any) -> list[WriteResult]:
        if not any(op.operation == "void" for op in ops):
            return write_batch(ops, **options)
        books.faults(error_503=1.0)  # every try of this call, the client's retries included
        try:
            return write_batch(ops, **options)
        finally:
            books.faults()

    with monkeypatch.context() as patch:
        patch.setattr(client, "write_batch", voids_answer_503)
        push()

    assert totals(books) == {"1001": [BILLED]}  # at rest: the original only, still billed
    status, error = queue_status(engine, "invoice", correction)
    assert status == "pending" and error is not None
    assert error.startswith(f"could not void invoice {original}") and "503" in error
    assert invoice_row(engine, correction)["sync_status"] != "synced"
    assert invoice_row(engine, original)["sync_status"] == "synced"

    make_due(engine)
    push()

    assert totals(books) == {"1001": [VOID], "1001-C": [CORRECTED]}
    assert invoice_row(engine, correction)["sync_status"] == "synced"
    assert queue_status(engine, "invoice", correction)[0] == "done"


@pytest.mark.parametrize("paid", ["10.00", "40.40"], ids=["partly-paid", "paid"])
def test_a_correction_of_a_paid_invoice_is_refused_up_front(
    engine: Engine,
    org: int,
    push: Callable[..., PushStats],
    books: Books,
    sent: list[WriteOp],
    paid: str,
) -> None:
    original, qbo_id = _original(engine, org, push)
    books.act(action="record_payment", invoice_id=qbo_id, amount=paid)
    correction = _correction(engine, org, original)
    sent.clear()

    stats = push()

    assert sent == [] and stats.dead == 1
    status, error = queue_status(engine, "invoice", correction)
    assert status == "dead" and error is not None
    assert error.startswith(f"invoice {correction} replaces_invoice_id: invoice {original} ")
    assert f"QuickBooks Id {qbo_id}" in error and f"{paid} of 40.40 paid" in error
    assert invoice_row(engine, correction)["sync_status"] == "error"
    [qbo] = books.objects("Invoice")  # the original stays as it is
    assert qbo["TotalAmt"] == BILLED and qbo["Balance"] == BILLED - Decimal(paid)
    assert invoice_row(engine, original)["sync_status"] == "synced"


def test_voiding_a_paid_invoice_is_refused_with_the_reason(
    engine: Engine, org: int, client: QuickBooksClient, push: Callable[..., PushStats], books: Books
) -> None:
    invoice, qbo_id = _original(engine, org, push)
    books.act(action="record_payment", invoice_id=qbo_id, amount="10.00")
    [current] = books.objects("Invoice")
    [refused] = client.write_batch(  # the sandbox refuses it as QuickBooks does: 6000
        [WriteOp("probe", "Invoice", "void", {"Id": qbo_id, "SyncToken": current["SyncToken"]}, "probe-void")]
    )
    assert refused.error is not None and refused.error.code == "6000"
    update(engine, s.invoices, invoice, status="void")

    push()

    status, error = queue_status(engine, "invoice", invoice)
    assert status == "dead" and error is not None and error.startswith(f"invoice {invoice} status: ")
    assert "payments applied" in error and "10.00 of 40.40 paid" in error
    assert invoice_row(engine, invoice)["sync_status"] == "error"
    assert totals(books) == {"1001": [BILLED]}


# -- (10) a 503 in the DocNumber guard ------------------------------------------------------------------------------


@pytest.fixture
def one_at_a_time(engine: Engine, settings: Settings, org: int) -> Iterator[QuickBooksClient]:
    """The organisation's client sending one request at a time, so a fault hits exactly the chunk meant."""
    config = ClientConfig(time_scale=TIME_SCALE, in_flight=1)
    with client_for_organization(engine, settings, org, config=config) as qbo:
        yield qbo


def test_a_503_in_the_doc_number_guard_retries_its_chunk_and_the_round_goes_on(
    engine: Engine,
    org: int,
    one_at_a_time: QuickBooksClient,
    books: Books,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def push() -> PushStats:  # lingering a second: long enough for a retry 5 QuickBooks seconds later
        return push_organization(
            engine, one_at_a_time, org, worker="guard-worker", linger_seconds=1.0, lease=LONG_LEASE
        )

    with engine.begin() as conn:
        customer, item = f.customer(conn, org), f.item(conn, org)
    push()
    with engine.begin() as conn:
        invoices = [f.invoice(conn, org, customer, item, doc_number=f"G-{n:02}") for n in range(31)]
    query, write_batch = one_at_a_time.query, one_at_a_time.write_batch
    guards: list[str] = []
    # the push prepares a chunk while another is sent: one request at a time here, so the company-wide fault
    # below hits the guard it is meant for and nothing else
    one_request = threading.Lock()

    def first_guard_answers_503(statement: str) -> object:
        with one_request:
            if "FROM Invoice" not in statement or guards:
                return query(statement)
            guards.append(statement)
            books.faults(error_503=1.0)
            try:
                return query(statement)
            finally:
                books.faults()

    def one_write_at_a_time(ops: Sequence[WriteOp], **options: Any) -> list[WriteResult]:
        with one_request:
            return write_batch(ops, **options)

    with monkeypatch.context() as patch:
        patch.setattr(one_at_a_time, "query", first_guard_answers_503)
        patch.setattr(one_at_a_time, "write_batch", one_write_at_a_time)
        stats = push()  # no traceback

    # the chunk whose guard got the 503 (of 30 invoices, or of 1: they are prepared side by side) failed, the other
    # chunk went on
    assert guards and stats.failed == guards[0].count("'G-") in (1, 30)
    assert any("503" in error for error in stats.errors)
    # its backoff is QuickBooks time (5 s, compressed by the time scale): the same (lingering) push retried it
    for invoice in invoices:
        assert queue_status(engine, "invoice", invoice)[0] == "done"
    assert sorted(books.by_doc_number()) == [f"G-{n:02}" for n in range(31)]
    assert all(len(copies) == 1 for copies in books.by_doc_number().values())


@pytest.mark.parametrize("original_was", ["lost", "pushed"])
def test_an_original_voided_by_its_open_correction_is_settled_not_refused_as_a_reopen(
    engine: Engine,
    org: int,
    client: QuickBooksClient,
    push: Callable[..., PushStats],
    books: Books,
    monkeypatch: pytest.MonkeyPatch,
    original_was: str,
) -> None:
    """The app never voids an original it corrects: ``open`` in Batchly and voided by its open replacement in
    QuickBooks is the settled state. The original's own queue row, coming round after the correction voided it (its
    create's answer was lost, or an app write queued it again), is acknowledged as voided, not dead-lettered."""
    if original_was == "lost":
        with engine.begin() as conn:
            customer, item = f.customer(conn, org), f.item(conn, org)
        push()
        with engine.begin() as conn:
            original = f.invoice(conn, org, customer, item, doc_number="1001")
        lose_invoice_checkpoints(engine, push, monkeypatch)
        assert (
            invoice_row(engine, original)["qbo_id"] is None
        )  # its row is due again, the correction goes first
    else:
        original, _ = _original(engine, org, push)
    correction = _correction(engine, org, original)
    push(invoice_ids=[correction])
    assert totals(books) == {"1001": [VOID], "1001-C": [CORRECTED]}
    if original_was == "pushed":  # an app write queues it again (a voided invoice may be edited)
        update(engine, s.invoices, original, due_date=invoice_row(engine, original)["txn_date"])
    make_due(engine)

    push()

    row = invoice_row(engine, original)
    assert (row["status"], row["sync_status"]) == ("open", "voided")
    assert queue_status(engine, "invoice", original)[0] == "done"
    assert totals(books) == {"1001": [VOID], "1001-C": [CORRECTED]}
    assert invoice_row(engine, correction)["sync_status"] == "synced"


def test_a_correction_made_while_its_original_waits_for_its_batch_call_is_not_created_beside_it(
    engine: Engine,
    org: int,
    client: QuickBooksClient,
    push: Callable[..., PushStats],
    books: Books,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The original's chunk has read its rows and asked its DocNumbers, and waits for the company's window; the
    accountant corrects it meanwhile and another chunk of the same push takes the correction. QuickBooks has no copy
    of the original yet, so nothing is there to void: the correction must wait until the original's chunk is
    settled (then void it first), not be created beside it (the chaos benchmark found two such open pairs)."""
    with engine.begin() as conn:
        customer, item = f.customer(conn, org), f.item(conn, org)
    push()
    with engine.begin() as conn:
        original = f.invoice(conn, org, customer, item, doc_number="2001")
    write_batch = client.write_batch
    corrections: list[int] = []

    def correct_while_waiting(self: InvoicePusher, ops: Sequence[WriteOp], **options: Any) -> Any:
        if not corrections and any(op.key == original for op in ops):
            with engine.begin() as conn:  # the app's edit, while the original waits for its batch call
                corrections.append(f.correction(conn, original, "2001-C"))
            other = threading.Thread(target=self.push, args=(corrections,))  # another chunk of this push
            other.start()
            other.join(timeout=30)
        return write_batch(ops, **options)

    pushers: list[InvoicePusher] = []
    real_push = InvoicePusher.push

    def chunk(self: InvoicePusher, ids: Sequence[int], **options: Any) -> Any:
        pushers.append(self)
        return real_push(self, ids, **options)

    with monkeypatch.context() as patch:
        patch.setattr(InvoicePusher, "push", chunk)
        patch.setattr(
            client, "write_batch", lambda ops, **options: correct_while_waiting(pushers[-1], ops, **options)
        )
        push()
    make_due(engine)
    push()

    [correction] = corrections
    assert totals(books) == {"2001": [VOID], "2001-C": [Decimal("50.50")]}
    assert invoice_row(engine, correction)["sync_status"] == "synced"
    assert queue_status(engine, "invoice", correction)[0] == "done"


def test_an_original_and_its_correction_in_chunks_side_by_side_do_not_wait_for_each_other(
    engine: Engine,
    org: int,
    push: Callable[..., PushStats],
    books: Books,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The original (its create's answer lost: in QuickBooks, not linked) and its correction come round in two
    chunks at once. The original's chunk decides it is superseded and sends nothing for it; the correction's chunk,
    asking meanwhile, must not wait for that chunk — each waiting for the other, they came round again and again
    and the run ended red (chaos seed 2: 32 corrections waiting in one round)."""
    with engine.begin() as conn:
        customer, item = f.customer(conn, org), f.item(conn, org)
    push()
    with engine.begin() as conn:
        original = f.invoice(conn, org, customer, item, doc_number="3001")
    lose_invoice_checkpoints(engine, push, monkeypatch)
    assert invoice_row(engine, original)["qbo_id"] is None
    with engine.begin() as conn:
        correction = f.correction(conn, original, "3001-C")
    lookup = InvoicePusher._lookup
    beside: list[list[Any]] = []
    asked: list[bool] = []

    def correction_asks_meanwhile(self: InvoicePusher, snap: Any, plan: Any) -> Any:
        if not asked and original in snap.invoices and correction not in snap.invoices:
            asked.append(True)
            beside.append(
                self.push([correction])
            )  # the correction's chunk, while the original's is under way
        return lookup(self, snap, plan)

    real_push = InvoicePusher.push

    def alone(
        self: InvoicePusher, ids: Sequence[int], **options: Any
    ) -> Any:  # the original's chunk without its correction
        return real_push(self, ids if asked else [i for i in ids if i != correction], **options)

    with monkeypatch.context() as patch:
        patch.setattr(InvoicePusher, "_lookup", correction_asks_meanwhile)
        patch.setattr(InvoicePusher, "push", alone)
        make_due(engine)
        push(invoice_ids=[original])

    [outcomes] = beside
    # the correction went on: it voided the original's copy (and is created from the next claim), it did not wait
    # for the original's chunk, which sends nothing
    [waits] = [o for o in outcomes if o.entity_id == correction]
    assert waits.action == "wait" and "to be voided first (sent now)" in getattr(waits, "message", ""), waits
    make_due(engine)
    push()
    assert totals(books) == {"3001": [VOID], "3001-C": [Decimal("50.50")]}
    assert queue_status(engine, "invoice", correction)[0] == "done"
