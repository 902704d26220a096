"""Attacks on the push's concurrency: a correction (or a correction of a correction) made while its original's chunk
waits for its batch call, that batch call answered 503 or its answer lost; the run must end, every queue row done or
dead with a reason, and no correction open beside what it replaces."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import QuickBooksClient, WriteOp
from batchly_pipelines.quickbooks.errors import ThrottledError
from batchly_pipelines.quickbooks.ratelimit import RateLimits, RealmBudget
from batchly_pipelines.services.connections import database_rate_limiter
from batchly_pipelines.services.push.invoices import InvoicePusher
from batchly_pipelines.services.push.organization import PushStats
from batchly_pipelines.store import schema as s
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.push import Books, invoice_row, lose_invoice_checkpoints, make_due

VOID = Decimal("0")


def _open_in_books(books: Books) -> dict[str, int]:
    """How many open (not voided) QuickBooks invoices hold each DocNumber."""
    return {
        doc: sum(1 for i in found if Decimal(str(i["TotalAmt"])) != VOID)
        for doc, found in books.by_doc_number().items()
    }


def _settle(engine: Engine, push: Callable[..., PushStats], rounds: int = 6) -> None:
    """Push again (backoffs skipped) until no queue row is pending."""
    for _ in range(rounds):
        with engine.connect() as conn:
            pending = conn.execute(
                sa.select(sa.func.count()).where(
                    s.sync_queue.c.status != "done", s.sync_queue.c.status != "dead"
                )
            ).scalar_one()
        if not pending:
            return
        make_due(engine)
        push()


def _assert_at_rest(engine: Engine, books: Books, chain: Sequence[tuple[int, str]]) -> None:
    """``chain`` is (invoice, DocNumber) from the original to the last correction: at most one of them is open in
    QuickBooks (the newest that reached it), none twice; every queue row is done or dead with a reason."""
    open_docs = _open_in_books(books)
    opened = {doc: open_docs.get(doc, 0) for _, doc in chain}
    assert sum(opened.values()) <= 1, f"open pair (or duplicate) in QuickBooks: {opened}, books {open_docs}"
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                s.sync_queue.c.entity_type,
                s.sync_queue.c.entity_id,
                s.sync_queue.c.status,
                s.sync_queue.c.last_error,
            )
        ).all()
    unsettled = [
        row
        for row in rows
        if row.status not in ("done", "dead") or (row.status == "dead" and not row.last_error)
    ]
    assert not unsettled, unsettled
    last, doc = chain[-1]
    assert opened[doc] == 1, (opened, invoice_row(engine, last)["sync_status"])


def _interleaved(
    engine: Engine,
    client: QuickBooksClient,
    push: Callable[..., PushStats],
    books: Books,
    monkeypatch: pytest.MonkeyPatch,
    original: int,
    meanwhile: Callable[[], list[int]],
    faults: dict[str, Any] | None = None,
) -> None:
    """Push; when the original's batch call is about to leave, ``meanwhile`` makes the app's edits and returns the
    invoices another chunk of this push takes (run to its checkpoint before the original's call leaves), then the
    original's call leaves (under ``faults``)."""
    write_batch = client.write_batch
    done: list[bool] = []
    pushers: list[InvoicePusher] = []
    real_push = InvoicePusher.push

    def chunk(self: InvoicePusher, ids: Sequence[int], **options: Any) -> Any:
        pushers.append(self)
        return real_push(self, ids, **options)

    def writes(ops: Sequence[WriteOp], **options: Any) -> Any:
        if not done and any(op.key == original for op in ops):
            done.append(True)
            ids = meanwhile()
            other = threading.Thread(target=pushers[-1].push, args=(ids,))
            other.start()
            other.join(timeout=30)
            if faults:
                books.faults(**faults)
                try:
                    return write_batch(ops, **options)
                finally:
                    books.faults()
        return write_batch(ops, **options)

    with monkeypatch.context() as patch:
        patch.setattr(InvoicePusher, "push", chunk)
        patch.setattr(client, "write_batch", writes)
        push()
    assert done, "the original's batch call never left"


@pytest.fixture
def original(engine: Engine, org: int, push: Callable[..., PushStats]) -> int:
    """An invoice 2001 not pushed yet (its customer and item are)."""
    with engine.begin() as conn:
        customer, item = f.customer(conn, org), f.item(conn, org)
    push()
    with engine.begin() as conn:
        return f.invoice(conn, org, customer, item, doc_number="2001")


@pytest.mark.parametrize("taken", ["both", "the second"])
@pytest.mark.parametrize("faults", [None, {"error_503": 1.0}, {"drop_after_write": 1.0, "seed": 3}])
def test_a_correction_of_a_correction_made_while_the_original_waits_never_leaves_an_open_pair(
    engine: Engine,
    client: QuickBooksClient,
    push: Callable[..., PushStats],
    books: Books,
    monkeypatch: pytest.MonkeyPatch,
    original: int,
    faults: dict[str, Any] | None,
    taken: str,
) -> None:
    """While the original's chunk waits for its batch call, the accountant corrects it twice (C1 replaces it, C2
    replaces C1); another chunk takes both, or only C2 (C1 comes later). Then the original's call leaves
    (answered, 503, or its answer lost)."""
    made: list[int] = []

    def correct_twice() -> list[int]:
        with engine.begin() as conn:
            first = f.correction(conn, original, "2001-C1")
            second = f.correction(conn, first, "2001-C2")
        made.extend([first, second])
        return list(made) if taken == "both" else [second]

    _interleaved(engine, client, push, books, monkeypatch, original, correct_twice, faults)
    _settle(engine, push)
    first, second = made
    _assert_at_rest(engine, books, [(original, "2001"), (first, "2001-C1"), (second, "2001-C2")])


def test_a_correction_voided_while_the_original_waits_leaves_the_original_open_alone(
    engine: Engine,
    client: QuickBooksClient,
    push: Callable[..., PushStats],
    books: Books,
    monkeypatch: pytest.MonkeyPatch,
    original: int,
) -> None:
    """The correction is made and at once set to void (the accountant changed her mind) while the original's chunk
    waits; another chunk takes the correction. The original stays the one open invoice."""
    made: list[int] = []

    def correct_and_void() -> list[int]:
        with engine.begin() as conn:
            made.append(f.correction(conn, original, "2001-C"))
            conn.execute(sa.update(s.invoices).where(s.invoices.c.id == made[0]).values(status="void"))
        return made

    _interleaved(engine, client, push, books, monkeypatch, original, correct_and_void)
    _settle(engine, push)
    _assert_at_rest(engine, books, [(made[0], "2001-C"), (original, "2001")])


def test_an_original_whose_correction_was_itself_corrected_before_it_came_round_again_is_settled(
    engine: Engine,
    push: Callable[..., PushStats],
    books: Books,
    original: int,
) -> None:
    """No interleaving needed: the original's create is answered 503 (it stays pending, backing off); meanwhile C1
    replaces it and C2 replaces C1, and the next run (the original not due yet) creates C2 and settles C1 as never
    pushed. When the original comes round alone it must be settled as superseded, not wait for C1 — which will never
    reach QuickBooks — for ever (its waits count no attempt, so it never even reaches the dead letter)."""
    books.faults(error_503=1.0)
    try:
        push()
    finally:
        books.faults()
    with engine.begin() as conn:
        first = f.correction(conn, original, "2001-C1")
        second = f.correction(conn, first, "2001-C2")
    push()  # the corrections only: the original backs off
    assert invoice_row(engine, second)["qbo_id"] is not None
    _settle(engine, push)
    _assert_at_rest(engine, books, [(original, "2001"), (first, "2001-C1"), (second, "2001-C2")])


def test_a_rare_429_does_not_learn_the_calls_admitted_before_it_that_never_left(engine: Engine) -> None:
    """A company that serves 20 batch calls a window: 20 are sent and answered; one more is admitted and waits at
    its write fence (a worker resuming from a freeze, its lease check slow); the 21st call sent is refused 429; then
    the fenced one is refused by its fence and withdrawn — QuickBooks never counted it. The realm took 20: a limit
    learned above that over-fills the next window (a 429 again, then halving). (The limiter lets at most
    ``UNSERVED_BATCHES`` beyond what the realm served be admitted, so here one; a realm serving less than it once did
    leaves room for more.)"""
    realm = "realm-attack-unsent"
    limiter = database_rate_limiter(engine, realm, RateLimits())  # QuickBooks time: one window is a minute
    for _ in range(20):
        with limiter.slot(batch=True):
            limiter.sending()
    admitted, release = threading.Barrier(2), threading.Event()

    def waits_at_its_fence() -> None:
        with contextlib.suppress(RuntimeError), limiter.slot(batch=True):
            admitted.wait(timeout=10)
            release.wait(timeout=10)
            raise RuntimeError("the write fence refused: never sent")

    fenced = [threading.Thread(target=waits_at_its_fence) for _ in range(1)]
    for thread in fenced:
        thread.start()
    admitted.wait(timeout=10)
    with contextlib.suppress(ThrottledError), limiter.slot(batch=True):
        limiter.sending()
        raise ThrottledError("QuickBooks: 429", status=429)
    release.set()
    for thread in fenced:
        thread.join(timeout=10)
    with engine.connect() as conn:
        left = conn.execute(
            sa.select(sa.func.count()).where(s.qbo_rate_requests.c.realm_id == realm)
        ).scalar_one()
    assert left == 20  # the never-sent call left the ledger, the refused one too
    learned = RealmBudget.load(limiter.ledger.budget(), limiter.limits).batch_per_minute
    assert learned.limit <= 20, f"learned {learned} from calls that never reached QuickBooks"


def test_a_second_correction_pushed_alone_voids_the_lost_copy_of_the_first(
    engine: Engine,
    push: Callable[..., PushStats],
    books: Books,
    monkeypatch: pytest.MonkeyPatch,
    original: int,
) -> None:
    """The original is in QuickBooks; C1 voids it and is created, but the run dies before C1's create is
    checkpointed (QuickBooks holds C1, Batchly does not know). C2 then replaces C1 and is pushed on its own first:
    it must find C1's copy by its DocNumber and void it before it is created."""
    push()
    with engine.begin() as conn:
        first = f.correction(conn, original, "2001-C1")
    make_due(engine)
    lose_invoice_checkpoints(
        engine,
        push,
        monkeypatch,
        when=lambda outcomes: any(o.entity_id == first and o.action == "create" for o in outcomes),
    )
    assert invoice_row(engine, first)["qbo_id"] is None
    assert _open_in_books(books).get("2001-C1") == 1  # QuickBooks holds the copy
    with engine.begin() as conn:
        second = f.correction(conn, first, "2001-C2")
    push(invoice_ids=[second])
    _settle(engine, push)
    _assert_at_rest(engine, books, [(original, "2001"), (first, "2001-C1"), (second, "2001-C2")])
