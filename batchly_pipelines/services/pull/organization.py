"""Pulling from QuickBooks: a window of changes into the mirror, then the mirror into Batchly (DESIGN.md §4).

``pull_customers`` / ``pull_items`` / ``pull_payments`` read what QuickBooks changed in a window (CDC adds deletions when
the window is within 30 days) into ``qbo_mirror``; ``reconcile_customers`` / ``reconcile_items`` /
``reconcile_invoice_payments`` bring Batchly in line without any QuickBooks call; :func:`pull_organization` does all
of it. Each returns a stats dataclass; the Dagster assets, the CLI and the benchmarks call these directly.

Each pull moves its entities' cursors (``sync_cursors``) to how far QuickBooks' own clock says the window was read:
the ``time`` of the last page's answer less :data:`SAFETY_LAG`, no further than the window's end nor than CDC saw
deletions. Our clock never enters it, so a QuickBooks clock running behind ours loses nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from batchly_pipelines.quickbooks import query as q
from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.rules.merge import MergePolicy, Rule
from batchly_pipelines.rules.name_lists import CUSTOMERS, ITEMS, NameList
from batchly_pipelines.rules.payments import refund_targets
from batchly_pipelines.services.pull.invoice_payments import PaymentStats, linked_ids, reconcile_payments
from batchly_pipelines.services.pull.mirror import (
    Deletions,
    ServerClock,
    Window,
    changed_pages,
    pull_deletions,
    store_objects,
    store_versions,
)
from batchly_pipelines.services.pull.owned import revert_owned_edits
from batchly_pipelines.services.pull.progress import ProgressMeter, ProgressReport
from batchly_pipelines.services.pull.reconcile import ReconcileStats, reconcile
from batchly_pipelines.store.cursors import get_cursor, set_cursor
from batchly_pipelines.store.db import Connection, Engine
from batchly_pipelines.store.invoice_payments import (
    clear_owed_reads,
    owe_reads,
    owed_reads,
    unmirrored_invoices,
)
from batchly_pipelines.store.mirror import mark_deleted, mirrored_payments, not_mirrored
from batchly_pipelines.store.review_fields import add_review_fields, review_fields
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines.store.statistics import GrowingTables

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # before any QuickBooks Online company existed
# a cursor stays this far behind QuickBooks' time of the last page read (a change stamped just before that answer
# may not have been visible to it)
SAFETY_LAG = timedelta(minutes=1)
# how far past our clock an incremental window reaches: QuickBooks' clock may run ahead of ours, and the cursor only
# moves to QuickBooks' own time anyway
CLOCK_ALLOWANCE = timedelta(hours=1)
PAYMENT_ENTITIES = ("Payment", "Invoice", "RefundReceipt")


@dataclass
class PullStats:
    """What one window pull wrote into the mirror and what it cost."""

    entities: tuple[str, ...]
    window: Window
    pulled: int = 0
    changed: int = 0
    deleted: int = 0
    api_calls: int = 0
    duration_s: float = 0.0
    by_entity: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, entity: str, name: str, amount: int) -> None:
        """Add ``amount`` to one counter, overall and for ``entity``."""
        setattr(self, name, getattr(self, name) + amount)
        row = self.by_entity.setdefault(entity, {"pulled": 0, "changed": 0, "deleted": 0})
        row[name] += amount


def cursor_name(entity: str) -> str:
    """The ``sync_cursors`` name holding how far ``entity`` has been pulled."""
    return f"pull.{entity}"


class _Metered:
    """Counts the client's calls and the elapsed time of one pull."""

    def __init__(self, client: QuickBooksClient) -> None:
        self.client = client
        self.calls = self._total()
        self.started = time.monotonic()

    def _total(self) -> int:
        return sum(self.client.stats.calls.values())

    def finish(self, stats: PullStats) -> PullStats:
        stats.api_calls = self._total() - self.calls
        stats.duration_s = round(time.monotonic() - self.started, 3)
        return stats


def _mirror_pages(
    engine: Engine,
    client: QuickBooksClient,
    organization_id: int,
    entity: str,
    window: Window,
    stats: PullStats,
    clock: ServerClock,
    progress: ProgressReport | None = None,
    also: Callable[[Connection, Sequence[Mapping[str, Any]]], None] | None = None,
    on_estimate: Callable[[int], None] | None = None,
) -> Generator[_Stored]:
    """Stream the window of ``entity`` into the mirror; yields each page's objects and those of them that were new
    or changed, with their new versions (``also`` is called with those in the transaction storing them).
    ``progress`` hears pages stored of pages estimated: a window of more than a page is counted (``COUNT(*)``, one
    call) when its first full page arrives; a window of one page costs no call for it. ``on_estimate`` hears that
    count of rows."""
    meter = ProgressMeter(f"mirror {entity}", "pages", progress)
    growing = GrowingTables.of_mirror(engine)  # the planner keeps up with an import
    reading = changed_pages(client, entity, window, clock)
    for page in reading:
        if meter.total is None and len(page) >= q.MAX_RESULTS:
            rows = client.count(entity, window.conditions(entity))
            meter.estimate(-(-rows // q.MAX_RESULTS))
            if on_estimate is not None:
                on_estimate(rows)
        with engine.begin() as conn:
            versions = store_versions(conn, organization_id, entity, page)
            changed = [obj for obj in page if obj["Id"] in versions]
            if also is not None:
                also(conn, changed)
        stats.count(entity, "pulled", len(page))
        stats.count(entity, "changed", len(changed))
        meter.add(1, len(page))
        growing.wrote(len(changed))
        yield _Stored(page, changed, versions)
    meter.finish()


@dataclass
class _Stored:
    """One page stored in the mirror: its objects, those that were new or changed, and the version each of those
    was written at."""

    page: Sequence[Mapping[str, Any]]
    changed: Sequence[Mapping[str, Any]]
    versions: Mapping[str, str]


def _read_until(window: Window, clock: ServerClock, deletions: Deletions) -> datetime | None:
    """How far ``window`` was read, on QuickBooks' clock (:meth:`ServerClock.complete_until`; for one range read
    alone, its last answer's time less :data:`SAFETY_LAG`), no further than the window's end nor than CDC saw
    deletions; None when no answer carried a time."""
    mark = clock.complete_until(window.end, SAFETY_LAG)
    if mark is None:
        return None
    if deletions.seen_until is not None:
        mark = min(mark, deletions.seen_until)
    return mark


def _advance_cursors(
    engine: Engine, organization_id: int, window: Window, marks: Mapping[str, datetime | None]
) -> None:
    """Move each entity's cursor forward to its mark (a cursor never moves back; None leaves it) — only when
    ``window`` read on from the cursor: a window that starts after it (a day range of a backfill, ``--since``)
    left the changes in between unread, and one that starts after the beginning of time cannot set a first
    cursor."""
    with engine.begin() as conn:
        for entity, mark in marks.items():
            if mark is None:
                continue
            known = get_cursor(conn, organization_id, cursor_name(entity))
            covered = window.start <= (datetime.fromisoformat(known) if known is not None else EPOCH)
            if covered and (known is None or datetime.fromisoformat(known) < mark):
                set_cursor(conn, organization_id, cursor_name(entity), mark.isoformat())


def pull_name_list(
    engine: Engine,
    client: QuickBooksClient,
    organization_id: int,
    entity: str,
    window: Window,
    *,
    progress: ProgressReport | None = None,
    on_stored: Callable[[Sequence[Mapping[str, Any]], Mapping[str, str]], None] | None = None,
    on_estimate: Callable[[int], None] | None = None,
) -> PullStats:
    """Mirror the ``Customer`` or ``Item`` records QuickBooks changed in ``window`` (inactive ones included);
    ``progress`` hears how far it got while it runs. ``on_stored`` is called with the objects each page wrote
    (new or newer versions) and the version each was written at, once they are committed — what raises there
    stops the pull, its cursor unmoved;
    ``on_estimate`` hears how many rows the window holds when a first full page made the pull count them."""
    meter, stats, clock = _Metered(client), PullStats((entity,), window), ServerClock()
    pages = _mirror_pages(
        engine, client, organization_id, entity, window, stats, clock, progress, on_estimate=on_estimate
    )
    with closing(pages):  # a pull stopped early stops its readers at once
        for stored in pages:
            if on_stored is not None:
                on_stored(stored.changed, stored.versions)
    deleted = pull_deletions(engine, client, organization_id, [entity], window, clock.latest)
    stats.count(entity, "deleted", len(deleted.objects[entity]))
    _advance_cursors(engine, organization_id, window, {entity: _read_until(window, clock, deleted)})
    return meter.finish(stats)


def pull_customers(
    engine: Engine,
    client: QuickBooksClient,
    organization_id: int,
    window: Window,
    *,
    progress: ProgressReport | None = None,
) -> PullStats:
    """Mirror the customers QuickBooks changed in ``window``."""
    return pull_name_list(engine, client, organization_id, "Customer", window, progress=progress)


def pull_items(
    engine: Engine,
    client: QuickBooksClient,
    organization_id: int,
    window: Window,
    *,
    progress: ProgressReport | None = None,
) -> PullStats:
    """Mirror the items QuickBooks changed in ``window``."""
    return pull_name_list(engine, client, organization_id, "Item", window, progress=progress)


def pull_payments(
    engine: Engine,
    client: QuickBooksClient,
    organization_id: int,
    window: Window,
    *,
    progress: ProgressReport | None = None,
) -> PullStats:
    """Mirror the payments, invoices and refund receipts changed in ``window``; then, with ``Id IN`` reads (never
    one call per invoice), the invoices that changed or deleted payments and refund receipts apply to, the linked
    invoices the mirror has never held (one QuickBooks no longer has was deleted before any pull saw it), and the
    payments those invoices list and refund receipts name that the mirror lacks.

    Nothing owed is forgotten when a pull is interrupted: the invoices (and the payments whose invoices) a changed
    or deleted payment or refund receipt affects are noted as owed a re-read (``qbo_owed_reads``) in the
    transaction that mirrors it, and cleared in the one that stores the re-read invoices; every pull settles what
    is owed, its own and what an interrupted one left. An owed invoice this pull's scan mirrored afresh after it
    was noted needs no second read."""
    meter, stats = _Metered(client), PullStats(PAYMENT_ENTITIES, window)
    clocks = {entity: ServerClock() for entity in PAYMENT_ENTITIES}

    def note(entity: str) -> Callable[[Connection, Sequence[Mapping[str, Any]]], None]:
        return lambda conn, objects: note_owed_reads(conn, organization_id, entity, objects)

    def scan(entity: str, owes: bool = False) -> Iterable[_Stored]:
        also = note(entity) if owes else None
        return _mirror_pages(
            engine, client, organization_id, entity, window, stats, clocks[entity], progress, also
        )

    for _ in scan("Payment", owes=True):  # a payment changes its invoices' own versions too
        pass
    with engine.connect() as conn:
        before_invoices = owed_reads(conn, organization_id)  # what the invoice scan below may settle
    seen: set[str] = set()
    wanted_payments: set[str] = set()
    for stored in scan("Invoice"):
        seen.update(invoice["Id"] for invoice in stored.changed)  # mirrored fresh: no need to read them again
        wanted_payments.update(pid for invoice in stored.page for pid in linked_ids(invoice, "Payment"))
    for _ in scan("RefundReceipt", owes=True):  # a refund changes no invoice version: its targets are owed
        pass
    latest = [clock.latest for clock in clocks.values() if clock.latest is not None]
    deleted = pull_deletions(
        engine,
        client,
        organization_id,
        PAYMENT_ENTITIES,
        window,
        max(latest, default=None),
        also=lambda conn, entity, objects: note_owed_reads(conn, organization_id, entity, objects),
    )
    for entity, objects in deleted.objects.items():
        stats.count(entity, "deleted", len(objects))
    with engine.connect() as conn:
        owed = owed_reads(conn, organization_id)
    refunded_payments = {qbo_id for entity, qbo_id in owed if entity == "Payment"}
    if refunded_payments:
        _mirror_missing(engine, client, organization_id, "Payment", refunded_payments, stats)
    with engine.connect() as conn:
        named = mirrored_payments(conn, organization_id, refunded_payments) if refunded_payments else {}
        unmirrored = set(unmirrored_invoices(conn, organization_id))
    affected: set[str] = set()  # invoices whose payments or refunds changed and that are still to be read
    for (entity, qbo_id), token in owed.items():
        if entity == "Invoice":
            invoices_of = [qbo_id]
        else:
            invoices_of = linked_ids(named[qbo_id], "Invoice") if qbo_id in named else []
        scanned_after = before_invoices.get((entity, qbo_id)) == token  # noted before the invoice scan
        affected.update(iid for iid in invoices_of if not (scanned_after and iid in seen))
    if affected | unmirrored:
        invoices = client.read_many("Invoice", sorted(affected | unmirrored))
        wanted_payments.update(pid for invoice in invoices for pid in linked_ids(invoice, "Payment"))
        found = {str(invoice["Id"]) for invoice in invoices}
        with engine.begin() as conn:
            # forced: a payment or refund moved even when the invoice's own version did not
            store_objects(conn, organization_id, "Invoice", invoices, force=True)
            # a linked invoice QuickBooks does not have and the mirror never held: deleted before any pull saw it
            gone = mark_deleted(conn, organization_id, "Invoice", dict.fromkeys(unmirrored - found, utcnow()))
            clear_owed_reads(conn, organization_id, owed)
        stats.count("Invoice", "changed", len(invoices))
        stats.count("Invoice", "deleted", len(gone))
    elif owed:
        with engine.begin() as conn:
            clear_owed_reads(conn, organization_id, owed)
    _mirror_missing(engine, client, organization_id, "Payment", wanted_payments, stats)
    _advance_cursors(
        engine,
        organization_id,
        window,
        {entity: _read_until(window, clocks[entity], deleted) for entity in PAYMENT_ENTITIES},
    )
    return meter.finish(stats)


def note_refund_targets(refunds: Iterable[Mapping[str, Any]], invoices: set[str], payments: set[str]) -> None:
    """Add the invoices and the payments that refund receipts name to ``invoices`` and ``payments``."""
    for refund in refunds:
        for txn_type, txn_id in refund_targets(refund):
            (invoices if txn_type == "Invoice" else payments).add(txn_id)


def note_owed_reads(
    conn: Connection, organization_id: int, entity: str, objects: Sequence[Mapping[str, Any]]
) -> None:
    """Note as owed a re-read what changed or deleted ``entity`` objects affect: a payment's invoices, a refund
    receipt's invoices and payments (whose invoices are then read)."""
    invoices: set[str] = set()
    payments: set[str] = set()
    if entity == "Payment":
        invoices.update(iid for payment in objects for iid in linked_ids(payment, "Invoice"))
    elif entity == "RefundReceipt":
        note_refund_targets(objects, invoices, payments)
    owe_reads(conn, organization_id, "Invoice", invoices)
    owe_reads(conn, organization_id, "Payment", payments)


def _mirror_missing(
    engine: Engine,
    client: QuickBooksClient,
    organization_id: int,
    entity: str,
    ids: set[str],
    stats: PullStats,
) -> None:
    """Read (``Id IN``) and mirror those of ``ids`` the mirror holds no row of."""
    with engine.connect() as conn:
        missing = not_mirrored(conn, organization_id, entity, ids)
    if missing:
        objects = client.read_many(entity, missing)
        with engine.begin() as conn:
            stats.count(entity, "changed", len(store_objects(conn, organization_id, entity, objects)))


def review_policy(policy: MergePolicy, review_fields: Iterable[str]) -> MergePolicy:
    """``policy`` with each of ``review_fields`` sent to manual review instead of newest-wins."""
    return policy.with_rules(**{name: Rule.NEEDS_REVIEW for name in review_fields})


def organization_policy(
    engine: Engine, kind: NameList, organization_id: int, also_review: Iterable[str] = ()
) -> MergePolicy:
    """The merge policy of ``kind`` for the organisation: its stored review fields go to review. ``also_review``
    (a pull's ``--review-field``) are stored first, so the push honours them too."""
    also_review = list(also_review)
    review_policy(kind.policy, also_review)  # unknown fields are refused before anything is stored
    with engine.begin() as conn:
        if also_review:
            add_review_fields(conn, organization_id, kind.entity_type, also_review)
        fields = review_fields(conn, organization_id, kind.entity_type)
    return review_policy(kind.policy, fields)


def reconcile_customers(
    engine: Engine,
    organization_id: int,
    *,
    review_fields: Iterable[str] = (),
    run_id: str | None = None,
    progress: ProgressReport | None = None,
) -> ReconcileStats:
    """Bring Batchly's customers in line with the mirror (merge, link or review, create, deactivate)."""
    policy = organization_policy(engine, CUSTOMERS, organization_id, review_fields)
    return reconcile(engine, CUSTOMERS, organization_id, policy=policy, run_id=run_id, progress=progress)


def reconcile_items(
    engine: Engine,
    organization_id: int,
    *,
    run_id: str | None = None,
    progress: ProgressReport | None = None,
) -> ReconcileStats:
    """Bring Batchly's items in line with the mirror (QuickBooks owns all but the description), then put Batchly's
    edits of the fields QuickBooks owns back (``services.pull.owned``)."""
    policy = organization_policy(engine, ITEMS, organization_id)
    stats = reconcile(engine, ITEMS, organization_id, policy=policy, run_id=run_id, progress=progress)
    reverted, fields = revert_owned_edits(engine, ITEMS, organization_id, run_id=run_id)
    stats.updated += reverted
    stats.conflicts += fields
    return stats


def reconcile_invoice_payments(
    engine: Engine, organization_id: int, *, now: datetime | None = None, run_id: str | None = None
) -> PaymentStats:
    """Payment columns of invoices whose QuickBooks side changed, then overdue for the organisation's today."""
    return reconcile_payments(engine, organization_id, now=now, run_id=run_id)


@dataclass
class OrganizationPull:
    """Everything :func:`pull_organization` did."""

    customers: PullStats
    items: PullStats
    payments: PullStats
    batchly_customers: ReconcileStats
    batchly_items: ReconcileStats
    batchly_invoices: PaymentStats

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers per step (for printing and JSON)."""
        result: dict[str, Any] = {}
        for name, stats in vars(self).items():
            values = asdict(stats)
            values.pop("window", None)
            result[name] = values
        return result


def pull_organization(
    engine: Engine,
    client: QuickBooksClient,
    organization_id: int,
    window: Window,
    *,
    review_fields: Iterable[str] = (),
    run_id: str | None = None,
    progress: ProgressReport | None = None,
) -> OrganizationPull:
    """Pull customers, items and payments for ``window`` and reconcile all of them into Batchly; ``progress``
    hears how far each step got while it runs. Customers and items are each reconciled while their pages arrive
    (``services.pull.overlap``); the invoices' payment columns once the payments' pull is done."""
    from batchly_pipelines.services.pull.overlap import (  # builds on this module
        pull_and_reconcile_customers,
        pull_and_reconcile_items,
    )

    customers = pull_and_reconcile_customers(
        engine,
        client,
        organization_id,
        window,
        review_fields=review_fields,
        run_id=run_id,
        progress=progress,
    )
    items = pull_and_reconcile_items(
        engine, client, organization_id, window, run_id=run_id, progress=progress
    )
    payments = pull_payments(engine, client, organization_id, window, progress=progress)
    return OrganizationPull(
        customers.pulled,
        items.pulled,
        payments,
        customers.reconciled,
        items.reconciled,
        reconcile_invoice_payments(engine, organization_id, run_id=run_id),
    )


def window_since_cursor(engine: Engine, organization_id: int, since: datetime | None = None) -> Window:
    """From ``since`` — without it, from the oldest pull cursor of the organisation (or everything) — to
    :data:`CLOCK_ALLOWANCE` past now (QuickBooks' clock may be ahead of ours; nothing is stamped past its now)."""
    if since is None:
        with engine.connect() as conn:
            marks = [
                get_cursor(conn, organization_id, cursor_name(e))
                for e in ("Customer", "Item", *PAYMENT_ENTITIES)
            ]
        since = min((datetime.fromisoformat(mark) for mark in marks if mark), default=EPOCH)
        if any(mark is None for mark in marks):
            since = EPOCH
    return Window(since, max(utcnow(), since).replace(microsecond=0) + CLOCK_ALLOWANCE)
