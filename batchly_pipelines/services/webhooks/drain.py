"""Draining the inbox: one targeted pull per realm, from the events that arrived since the last one.

:func:`drain_realm` claims the realm's pending events for the run, reads the notified customers, items, invoices and
payments with ``Id IN (…)`` queries (one per entity, whatever the number of events), writes them into the mirror
through the pull's own path (:func:`~batchly_pipelines.services.pull.mirror.store_objects`), then reconciles them
into Batchly with the pull's reconciliations. The events are marked done in a last transaction, once all of that has
been committed; a run that fails leaves them pending for the next run.

Out-of-order events cannot make Batchly go back in time: an event only names an object, which is read as QuickBooks
has it now. A read is written only when its SyncToken is at least the mirror's — a slower concurrent pull that read
an older version cannot overwrite a newer one — and an object the mirror holds as deleted is not brought back by a
read made before the deletion. Deletions: an object notified as deleted or merged away that the read no longer finds
is flagged deleted in the mirror (at the time notified); the reconciliations then deactivate customers and items and
settle deleted invoices as voided. Voids are ordinary new versions. A payment's change also re-reads the invoices its
old and new versions apply to, as the window pull does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.services.pull.invoice_payments import linked_ids
from batchly_pipelines.services.pull.mirror import store_objects
from batchly_pipelines.services.pull.organization import (
    note_refund_targets,
    reconcile_customers,
    reconcile_invoice_payments,
    reconcile_items,
)
from batchly_pipelines.services.webhooks.changes import PullRequest, pull_requests
from batchly_pipelines.services.webhooks.events import WebhookEvent
from batchly_pipelines.services.webhooks.intake import UNKNOWN_REALM
from batchly_pipelines.store.db import Connection, Engine
from batchly_pipelines.store.inbox import (
    claim_events,
    organizations_connected_to,
    realms_with_connection,
    settle_events,
)
from batchly_pipelines.store.mirror import (
    live_tokens,
    mark_deleted,
    mirrored_objects,
    mirrored_payments,
    not_mirrored,
)
from batchly_pipelines.store.schema import utcnow

logger = logging.getLogger(__name__)

CLAIM_LIMIT = 5000  # events per run; the rest wait for the next one
# a client for (organisation, realm): raises LookupError when the organisation has no connection to that realm
ClientFor = Callable[[int, str], QuickBooksClient]


class WrongCompany(RuntimeError):
    """A client of another QuickBooks company than the one whose changes are to be pulled: nothing is read."""


class RealmNotConnected(RuntimeError):
    """The realm's connections all wait for re-authorisation: its events stay pending until one is connected."""


@dataclass
class TargetedPull:
    """What one organisation's targeted pull read and wrote, per QuickBooks entity."""

    organization_id: int
    read: dict[str, int] = field(default_factory=dict)  # objects QuickBooks returned
    changed: dict[str, int] = field(default_factory=dict)  # new versions written into the mirror
    deleted: dict[str, int] = field(default_factory=dict)  # flagged deleted in the mirror
    stale: dict[str, int] = field(default_factory=dict)  # reads older than the mirror's version, not written
    api_calls: int = 0
    reconciled: dict[str, dict[str, Any]] = field(default_factory=dict)

    def count(self, counter: str, entity: str, amount: int) -> None:
        """Add ``amount`` to one per-entity counter."""
        if amount:
            numbers: dict[str, int] = getattr(self, counter)
            numbers[entity] = numbers.get(entity, 0) + amount


@dataclass
class Drain:
    """What one run did with one realm's events."""

    realm_id: str
    run_id: str
    events: int = 0
    done: int = 0
    ignored: int = 0
    pulls: list[TargetedPull] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def api_calls(self) -> int:
        """QuickBooks calls made, every organisation together."""
        return sum(pull.api_calls for pull in self.pulls)

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers (for logs and Dagster metadata)."""
        return asdict(self) | {"api_calls": self.api_calls}


def drain_realm(
    engine: Engine, realm_id: str, run_id: str, client_for: ClientFor, *, limit: int = CLAIM_LIMIT
) -> Drain:
    """Claim the realm's pending events for ``run_id``, pull what they name into every organisation connected to
    the realm, and mark them done once that is committed. Raises :class:`RealmNotConnected` (events left pending)
    when the realm's connections all need re-authorisation."""
    started = time.monotonic()
    drain = Drain(realm_id, run_id)
    with engine.begin() as conn:
        rows = claim_events(conn, realm_id, run_id, limit)
        organizations = organizations_connected_to(conn, realm_id)
        known = bool(realms_with_connection(conn, [realm_id]))
    drain.events = len(rows)
    if rows and not organizations and known:
        raise RealmNotConnected(
            f"QuickBooks company {realm_id}: {len(rows)} event(s) wait until its connection is re-authorised"
        )
    if rows and not organizations:
        with engine.begin() as conn:
            drain.ignored = settle_events(conn, run_id, "ignored", UNKNOWN_REALM)
    elif rows:
        request = pull_requests(_event(row) for row in rows)[realm_id]
        for organization_id in organizations:
            try:
                client = client_for(organization_id, realm_id)
            except LookupError:  # disconnected or switched to another company since the claim
                logger.info(
                    "organisation %s: no connection to QuickBooks company %s any more; its %s event(s) are not "
                    "pulled into it",
                    organization_id,
                    realm_id,
                    len(rows),
                )
                continue
            with client:
                drain.pulls.append(pull_notified(engine, client, organization_id, request, run_id=run_id))
        with engine.begin() as conn:
            if drain.pulls:
                drain.done = settle_events(conn, run_id, "done")
            else:
                drain.ignored = settle_events(conn, run_id, "ignored", UNKNOWN_REALM)
    drain.duration_s = round(time.monotonic() - started, 3)
    return drain


def pull_notified(
    engine: Engine,
    client: QuickBooksClient,
    organization_id: int,
    request: PullRequest,
    *,
    run_id: str | None = None,
) -> TargetedPull:
    """Read the objects ``request`` names into the organisation's mirror and reconcile them into Batchly. Raises
    :class:`WrongCompany` (nothing read) when ``client`` is not a client of the request's realm."""
    if client.realm_id != request.realm_id:
        raise WrongCompany(
            f"organisation {organization_id}: a client of QuickBooks company {client.realm_id} was given to pull "
            f"changes of company {request.realm_id}"
        )
    calls_before = sum(client.stats.calls.values())
    pull = TargetedPull(organization_id)
    for entity in ("Customer", "Item"):
        if request.ids(entity):
            _read_into_mirror(engine, client, pull, entity, request.ids(entity), request.removed(entity))
    touched_payments = bool(request.ids("Payment") or request.ids("Invoice") or request.ids("RefundReceipt"))
    affected: set[str] = set()  # invoices a changed payment applies to, before or after the change
    refunded: set[str] = set()  # payments a changed refund receipt names, before or after the change
    if request.ids(
        "RefundReceipt"
    ):  # as the pull: a refund changes no invoice version, its targets are re-read
        with engine.connect() as conn:
            earlier = mirrored_objects(conn, organization_id, "RefundReceipt", request.ids("RefundReceipt"))
        refunds, gone_refunds = _read_into_mirror(
            engine,
            client,
            pull,
            "RefundReceipt",
            request.ids("RefundReceipt"),
            request.removed("RefundReceipt"),
        )
        note_refund_targets([*earlier.values(), *refunds, *gone_refunds], affected, refunded)
    if request.ids("Payment"):
        with engine.connect() as conn:
            before = mirrored_payments(conn, organization_id, request.ids("Payment"))
        affected.update(iid for payment in before.values() for iid in linked_ids(payment, "Invoice"))
        payments, removed = _read_into_mirror(
            engine, client, pull, "Payment", request.ids("Payment"), request.removed("Payment")
        )
        affected.update(iid for payment in [*payments, *removed] for iid in linked_ids(payment, "Invoice"))
    if refunded:  # the payments refunds name: mirrored if they are not, their invoices re-read
        with engine.connect() as conn:
            missing_refunded = not_mirrored(conn, organization_id, "Payment", refunded)
        if missing_refunded:
            _read_into_mirror(engine, client, pull, "Payment", set(missing_refunded), {})
        with engine.connect() as conn:
            named = mirrored_payments(conn, organization_id, refunded)
        affected.update(iid for payment in named.values() for iid in linked_ids(payment, "Invoice"))
    invoice_ids = request.ids("Invoice") | affected
    if invoice_ids:
        # forced for the invoices a payment moved: their own version may not have changed
        invoices, _ = _read_into_mirror(
            engine, client, pull, "Invoice", invoice_ids, request.removed("Invoice"), force=affected
        )
        listed = {pid for invoice in invoices for pid in linked_ids(invoice, "Payment")}
        with engine.connect() as conn:
            missing = not_mirrored(conn, organization_id, "Payment", listed)
        if missing:
            _read_into_mirror(engine, client, pull, "Payment", set(missing), {})
    pull.api_calls = sum(client.stats.calls.values()) - calls_before
    if request.ids("Customer"):
        pull.reconciled["customers"] = asdict(reconcile_customers(engine, organization_id, run_id=run_id))
    if request.ids("Item"):
        pull.reconciled["items"] = asdict(reconcile_items(engine, organization_id, run_id=run_id))
    if touched_payments:
        pull.reconciled["invoices"] = asdict(
            reconcile_invoice_payments(engine, organization_id, run_id=run_id)
        )
    return pull


def _read_into_mirror(
    engine: Engine,
    client: QuickBooksClient,
    pull: TargetedPull,
    entity: str,
    ids: set[str],
    removed: Mapping[str, datetime | None],
    *,
    force: Iterable[str] = (),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read ``ids`` (``Id IN``) and write the versions newer than the mirror's; flag the ones notified as removed
    that QuickBooks no longer has. Returns the objects read and the last mirrored data of those flagged deleted."""
    objects = client.read_many(entity, sorted(ids))
    found = {str(obj["Id"]) for obj in objects}
    gone = {qbo_id: when or utcnow() for qbo_id, when in removed.items() if qbo_id not in found}
    pull.count("read", entity, len(objects))
    with engine.begin() as conn:
        newest = _not_older(conn, pull.organization_id, entity, objects)
        pull.count("stale", entity, len(objects) - len(newest))
        forced = set(force)
        written = store_objects(
            conn, pull.organization_id, entity, [o for o in newest if o["Id"] not in forced]
        )
        written += store_objects(
            conn, pull.organization_id, entity, [o for o in newest if o["Id"] in forced], force=True
        )
        deleted = mark_deleted(conn, pull.organization_id, entity, gone)
    pull.count("changed", entity, len(written))
    pull.count("deleted", entity, len(deleted))
    missing = ids - found - set(gone)
    if missing:  # a Create or Update of something QuickBooks no longer has: left to CDC and the nightly pulls
        logger.info(
            "organisation %s: %s %s notified but not found", pull.organization_id, entity, sorted(missing)
        )
    return objects, deleted


def _not_older(
    conn: Connection, organization_id: int, entity: str, objects: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The objects whose SyncToken is at least the mirror's, and that the mirror does not hold as deleted."""
    ids = [str(obj["Id"]) for obj in objects]
    if not ids:
        return []
    live = live_tokens(conn, organization_id, entity, ids)
    unknown = set(not_mirrored(conn, organization_id, entity, set(ids)))
    return [
        obj
        for obj in objects
        if obj["Id"] in unknown or (obj["Id"] in live and _token(obj["SyncToken"]) >= _token(live[obj["Id"]]))
    ]


def _token(sync_token: str) -> int:
    """A SyncToken as the number it is (QuickBooks counts versions up from 0)."""
    return int(sync_token)


def _event(row: Mapping[str, Any]) -> WebhookEvent:
    return WebhookEvent(
        row["event_id"],
        row["realm_id"],
        row["entity_type"],
        row["entity_id"],
        row["operation"],
        row["event_time"],
    )
