"""Pulling from QuickBooks: a window of changes into the mirror, then the mirror into Batchly (DESIGN.md §4).

``pull_customers`` / ``pull_items`` / ``pull_payments`` read what QuickBooks changed in a window (CDC adds deletions when
the window is within 30 days) into ``qbo_mirror``; ``reconcile_customers`` / ``reconcile_items`` /
``reconcile_invoice_payments`` bring Batchly in line without any QuickBooks call; :func:`pull_organization` does all
of it. Each returns a stats dataclass; the Dagster assets, the CLI and the benchmarks call these directly.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.rules.merge import MergePolicy, Rule
from batchly_pipelines.rules.name_lists import CUSTOMERS, ITEMS
from batchly_pipelines.services.pull.invoice_payments import PaymentStats, linked_ids, reconcile_payments
from batchly_pipelines.services.pull.mirror import (
    Window,
    changed_pages,
    prefetched,
    pull_deletions,
    store_objects,
)
from batchly_pipelines.services.pull.reconcile import ReconcileStats, reconcile
from batchly_pipelines.store.cursors import get_cursor, set_cursor
from batchly_pipelines.store.db import Engine
from batchly_pipelines.store.mirror import not_mirrored
from batchly_pipelines.store.schema import utcnow

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # before any QuickBooks Online company existed
SAFETY_LAG = timedelta(minutes=1)  # a cursor stays behind our clock: QuickBooks stamps with its own


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
) -> Iterable[list[Mapping[str, Any]]]:
    """Stream the window of ``entity`` into the mirror; yields the objects of each page that were new or changed."""
    for page in prefetched(changed_pages(client, entity, window)):
        with engine.begin() as conn:
            changed = store_objects(conn, organization_id, entity, page)
        stats.count(entity, "pulled", len(page))
        stats.count(entity, "changed", len(changed))
        yield changed


def _advance_cursors(engine: Engine, organization_id: int, entities: Iterable[str], window: Window) -> None:
    mark = min(window.end, utcnow() - SAFETY_LAG).isoformat()
    with engine.begin() as conn:
        for entity in entities:
            known = get_cursor(conn, organization_id, cursor_name(entity))
            if known is None or known < mark:
                set_cursor(conn, organization_id, cursor_name(entity), mark)


def pull_name_list(
    engine: Engine, client: QuickBooksClient, organization_id: int, entity: str, window: Window
) -> PullStats:
    """Mirror the ``Customer`` or ``Item`` records QuickBooks changed in ``window`` (inactive ones included)."""
    meter, stats = _Metered(client), PullStats((entity,), window)
    for _ in _mirror_pages(engine, client, organization_id, entity, window, stats):
        pass
    deleted = pull_deletions(engine, client, organization_id, [entity], window)
    stats.count(entity, "deleted", len(deleted[entity]))
    _advance_cursors(engine, organization_id, [entity], window)
    return meter.finish(stats)


def pull_customers(
    engine: Engine, client: QuickBooksClient, organization_id: int, window: Window
) -> PullStats:
    """Mirror the customers QuickBooks changed in ``window``."""
    return pull_name_list(engine, client, organization_id, "Customer", window)


def pull_items(engine: Engine, client: QuickBooksClient, organization_id: int, window: Window) -> PullStats:
    """Mirror the items QuickBooks changed in ``window``."""
    return pull_name_list(engine, client, organization_id, "Item", window)


def pull_payments(
    engine: Engine, client: QuickBooksClient, organization_id: int, window: Window
) -> PullStats:
    """Mirror the payments and invoices changed in ``window``, the invoices that changed or deleted payments apply
    to (``Id IN``), and the payments those invoices list that the mirror lacks — never one call per invoice."""
    meter, stats = _Metered(client), PullStats(("Payment", "Invoice"), window)
    affected: set[str] = set()  # invoices whose payments changed
    for changed in _mirror_pages(engine, client, organization_id, "Payment", window, stats):
        affected.update(iid for payment in changed for iid in linked_ids(payment, "Invoice"))
    seen: set[str] = set()
    wanted_payments: set[str] = set()
    for changed in _mirror_pages(engine, client, organization_id, "Invoice", window, stats):
        seen.update(invoice["Id"] for invoice in changed)
        wanted_payments.update(pid for invoice in changed for pid in linked_ids(invoice, "Payment"))
    deleted = pull_deletions(engine, client, organization_id, ["Payment", "Invoice"], window)
    for entity, objects in deleted.items():
        stats.count(entity, "deleted", len(objects))
    affected.update(iid for payment in deleted["Payment"] for iid in linked_ids(payment, "Invoice"))
    if affected - seen:
        invoices = client.read_many("Invoice", sorted(affected - seen))
        wanted_payments.update(pid for invoice in invoices for pid in linked_ids(invoice, "Payment"))
        with engine.begin() as conn:
            # forced: a payment moved even when the invoice's own version did not
            store_objects(conn, organization_id, "Invoice", invoices, force=True)
        stats.count("Invoice", "changed", len(invoices))
    with engine.connect() as conn:
        missing = not_mirrored(conn, organization_id, "Payment", wanted_payments)
    if missing:
        payments = client.read_many("Payment", missing)
        with engine.begin() as conn:
            stats.count("Payment", "changed", len(store_objects(conn, organization_id, "Payment", payments)))
    _advance_cursors(engine, organization_id, stats.entities, window)
    return meter.finish(stats)


def review_policy(policy: MergePolicy, review_fields: Iterable[str]) -> MergePolicy:
    """``policy`` with each of ``review_fields`` sent to manual review instead of newest-wins."""
    return policy.with_rules(**{name: Rule.NEEDS_REVIEW for name in review_fields})


def reconcile_customers(
    engine: Engine, organization_id: int, *, review_fields: Iterable[str] = (), run_id: str | None = None
) -> ReconcileStats:
    """Bring Batchly's customers in line with the mirror (merge, link or review, create, deactivate)."""
    policy = review_policy(CUSTOMERS.policy, review_fields)
    return reconcile(engine, CUSTOMERS, organization_id, policy=policy, run_id=run_id)


def reconcile_items(engine: Engine, organization_id: int, *, run_id: str | None = None) -> ReconcileStats:
    """Bring Batchly's items in line with the mirror (QuickBooks owns all but the description)."""
    return reconcile(engine, ITEMS, organization_id, run_id=run_id)


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
) -> OrganizationPull:
    """Pull customers, items and payments for ``window`` and reconcile all of them into Batchly."""
    customers = pull_customers(engine, client, organization_id, window)
    items = pull_items(engine, client, organization_id, window)
    payments = pull_payments(engine, client, organization_id, window)
    return OrganizationPull(
        customers,
        items,
        payments,
        reconcile_customers(engine, organization_id, review_fields=review_fields, run_id=run_id),
        reconcile_items(engine, organization_id, run_id=run_id),
        reconcile_invoice_payments(engine, organization_id, run_id=run_id),
    )


def window_since_cursor(engine: Engine, organization_id: int, since: datetime | None = None) -> Window:
    """``[since, now)``; without ``since``, from the oldest pull cursor of the organisation (or everything)."""
    if since is None:
        with engine.connect() as conn:
            marks = [
                get_cursor(conn, organization_id, cursor_name(e)) for e in ("Customer", "Item", "Payment")
            ]
        since = min((datetime.fromisoformat(mark) for mark in marks if mark), default=EPOCH)
        if any(mark is None for mark in marks):
            since = EPOCH
    now = utcnow()
    # QuickBooks compares whole seconds: end after the current one so that nothing changed so far is left out
    return Window(since, now.replace(microsecond=0) + timedelta(seconds=1))
