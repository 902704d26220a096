"""The CDC repair: what webhooks missed, found by one change-data-capture read per realm and pulled like an event.

Intuit may delay, aggregate or drop events, holds back later events until an earlier one is acknowledged, and the
receiver may be down. A **sweep** asks CDC for every Customer, Item, Invoice and Payment that changed since the
realm's last sweep saw everything (``repaired_until``, QuickBooks' clock less the client's safety lag), compares
each with the organisation's mirror, and treats the ones the mirror lacks — a newer SyncToken, an object it never
saw, a deletion of an object it holds live — exactly as notified events: :func:`~.drain.pull_notified` reads them
(``Id IN``) and reconciles them. When webhooks brought everything, a sweep costs one read.

:func:`sweep_realms` sweeps many realms in one process (a thousand realms' sweeps every 15 minutes are a few runs,
not thousands), each in its own transactions, one realm's failure retried and then reported against it.
:func:`sweeps_due` says which realms need one: never swept, swept longer than the interval ago (15 minutes by
default), or a receiver started since the last sweep (it was down: whatever Intuit could not deliver meanwhile is
held back or lost). :func:`webhook_health` is what the ``webhooks_flowing`` check reports: a connected realm that has
sent nothing for too long, or whose unrepaired stretch nears CDC's 30-day horizon.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from batchly_pipelines.quickbooks.client import CdcResult
from batchly_pipelines.quickbooks.wire import qbo_last_updated
from batchly_pipelines.services.fleet import (
    DEFAULT_ATTEMPTS,
    DEFAULT_RETRY_DELAY_S,
    DEFAULT_WORKERS,
    Outcome,
    run_each,
)
from batchly_pipelines.services.webhooks.changes import EntityChanges, PullRequest
from batchly_pipelines.services.webhooks.drain import ClientFor, TargetedPull, WrongCompany, pull_notified
from batchly_pipelines.services.webhooks.events import SYNCED_ENTITIES
from batchly_pipelines.store.db import Connection, Engine
from batchly_pipelines.store.inbox import organizations_connected_to
from batchly_pipelines.store.mirror import live_tokens, not_mirrored
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines.store.webhook_repair import (
    connected_realms,
    last_events_received,
    last_receiver_start,
    realm_repairs,
    save_sweep,
)

REPAIR_EVERY = timedelta(minutes=15)
FIRST_SWEEP_LOOKBACK = timedelta(days=1)  # a realm's first sweep; the nightly pulls cover what is older
CDC_HORIZON = timedelta(days=30)  # QuickBooks answers CDC for the last 30 days only
CDC_MARGIN = timedelta(hours=1)  # asked no closer to the horizon than this (the clocks may differ)
HORIZON_WARNING = timedelta(days=5)  # webhooks_flowing fails this long before a gap leaves CDC's reach
SILENCE_LIMIT = timedelta(hours=24)

logger = logging.getLogger(__name__)


@dataclass
class Sweep:
    """What one CDC sweep of a realm found and pulled."""

    realm_id: str
    since: datetime | None = None
    repaired_until: datetime | None = None
    changes: int = 0  # objects CDC returned
    gaps: dict[str, int] = field(
        default_factory=dict
    )  # per entity: what the mirror lacked, every organisation
    beyond_horizon: bool = (
        False  # the last sweep is older than CDC reaches: what changed before is left to pulls
    )
    cdc_calls: int = 0
    pulls: list[TargetedPull] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def api_calls(self) -> int:
        """QuickBooks calls: the CDC and the reads of the gaps."""
        return self.cdc_calls + sum(pull.api_calls for pull in self.pulls)

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self) | {"api_calls": self.api_calls}
        for key in ("since", "repaired_until"):
            values[key] = values[key].isoformat() if values[key] else None
        return values


def sweep_realm(
    engine: Engine,
    realm_id: str,
    client_for: ClientFor,
    *,
    run_id: str | None = None,
    now: datetime | None = None,
) -> Sweep:
    """CDC since the realm's last sweep; pull what the mirror of each organisation connected to it lacks; record
    the sweep (its ``repaired_until`` is where the next one starts) once all of that is committed."""
    started, now = time.monotonic(), now or utcnow()
    sweep = Sweep(realm_id)
    with engine.connect() as conn:
        organizations = organizations_connected_to(conn, realm_id)
        last = realm_repairs(conn, [realm_id]).get(realm_id)
    if not organizations:
        return sweep
    since = last.repaired_until if last else now - FIRST_SWEEP_LOOKBACK
    reach = now - CDC_HORIZON + CDC_MARGIN
    sweep.beyond_horizon = since < reach
    sweep.since = max(since, reach)
    cdc: CdcResult | None = None
    for organization_id in organizations:
        try:
            client = client_for(organization_id, realm_id)
        except LookupError:  # disconnected or switched to another company since
            logger.info(
                "organisation %s: no connection to QuickBooks company %s any more", organization_id, realm_id
            )
            continue
        with client:
            if client.realm_id != realm_id:
                raise WrongCompany(
                    f"organisation {organization_id}: a client of QuickBooks company {client.realm_id} was given "
                    f"to sweep company {realm_id}"
                )
            if cdc is None:
                asked_at = utcnow()
                cdc = client.cdc(SYNCED_ENTITIES, sweep.since)
                sweep.cdc_calls = cdc.calls
                sweep.changes = sum(len(objects) for objects in cdc.objects.values())
            with engine.connect() as conn:
                request = missed_changes(conn, organization_id, realm_id, cdc)
            for entity, changes in request.entities.items():
                sweep.gaps[entity] = sweep.gaps.get(entity, 0) + len(changes.ids)
            if request.entities:
                sweep.pulls.append(pull_notified(engine, client, organization_id, request, run_id=run_id))
    if cdc is None:  # no organisation is connected to the realm any more
        return sweep
    sweep.repaired_until = cdc.high_water_mark
    with engine.begin() as conn:
        # swept_at is when the CDC was asked: a receiver that starts after that is not covered by this sweep
        save_sweep(conn, realm_id, cdc.high_water_mark, asked_at, sum(sweep.gaps.values()))
    sweep.duration_s = round(time.monotonic() - started, 3)
    return sweep


def sweep_realms(
    engine: Engine,
    realm_ids: Iterable[str],
    client_for: ClientFor,
    *,
    run_id: str | None = None,
    workers: int = DEFAULT_WORKERS,
    attempts: int = DEFAULT_ATTEMPTS,
    retry_delay_s: float = DEFAULT_RETRY_DELAY_S,
    on_outcome: Callable[[Outcome[str, Sweep]], None] | None = None,
) -> list[Outcome[str, Sweep]]:
    """Sweep many realms in one process, ``workers`` at a time (:func:`~batchly_pipelines.services.fleet.run_each`):
    each realm's sweep is :func:`sweep_realm` — its own CDC read, its own transactions, its own ``repaired_until`` —
    and a realm whose sweep fails is retried, then reported in its outcome while the others carry on (its
    ``repaired_until`` stays, so it is due again)."""
    return run_each(
        realm_ids,
        lambda realm_id: sweep_realm(engine, realm_id, client_for, run_id=run_id),
        workers=workers,
        attempts=attempts,
        retry_delay_s=retry_delay_s,
        on_outcome=on_outcome,
    )


def missed_changes(conn: Connection, organization_id: int, realm_id: str, cdc: CdcResult) -> PullRequest:
    """The changes CDC reported that the organisation's mirror does not hold: a version newer than the mirror's, an
    object it never saw, a deletion of an object it holds live or never held. An object the mirror holds as deleted
    stays so."""
    request = PullRequest(realm_id)
    for entity in SYNCED_ENTITIES:
        objects = cdc.objects.get(entity, [])
        if not objects:
            continue
        ids = [str(obj["Id"]) for obj in objects]
        live = live_tokens(conn, organization_id, entity, ids)
        unseen = set(not_mirrored(conn, organization_id, entity, set(ids)))
        changes = EntityChanges()
        for obj in objects:
            qbo_id = str(obj["Id"])
            if obj.get("status") == "Deleted":
                # live, or never mirrored (the push does not write the mirror: a pushed invoice deleted before
                # any pull read it); only one held as deleted is settled already
                if qbo_id in live or qbo_id in unseen:
                    changes.ids.add(qbo_id)
                    changes.removed[qbo_id] = qbo_last_updated(obj)
            elif qbo_id in unseen or (qbo_id in live and int(obj["SyncToken"]) > int(live[qbo_id])):
                changes.ids.add(qbo_id)
        if changes.ids:
            request.entities[entity] = changes
            request.events += len(changes.ids)
    return request


def sweeps_due(
    engine: Engine, every: timedelta = REPAIR_EVERY, now: datetime | None = None
) -> dict[str, str]:
    """The connected realms that need a sweep now, each with the reason."""
    now = now or utcnow()
    with engine.connect() as conn:
        realms = connected_realms(conn)
        repairs = realm_repairs(conn, realms)
        restarted = last_receiver_start(conn)
    due: dict[str, str] = {}
    for realm_id in sorted(realms):
        last = repairs.get(realm_id)
        if last is None:
            due[realm_id] = "never swept"
        elif restarted is not None and restarted > last.swept_at:
            due[realm_id] = f"a webhook receiver started at {restarted:%H:%M:%S} UTC, after the last sweep"
        elif now - last.swept_at >= every:
            due[realm_id] = f"last swept {(now - last.swept_at).total_seconds() / 60:.0f} min ago"
    return due


@dataclass(frozen=True)
class RealmHealth:
    """One connected realm as ``webhooks_flowing`` sees it."""

    realm_id: str
    last_event_at: datetime | None
    silent_for: timedelta  # since its last event (or since it was connected)
    repaired_until: datetime | None
    unrepaired_for: timedelta  # since the point up to which everything is known to be in Batchly
    problems: tuple[str, ...]


def webhook_health(
    engine: Engine, silence_limit: timedelta = SILENCE_LIMIT, now: datetime | None = None
) -> list[RealmHealth]:
    """Every connected realm, with what is wrong: it sent nothing for longer than ``silence_limit``, or its
    unrepaired stretch is within :data:`HORIZON_WARNING` of CDC's 30 days (past it, CDC cannot repair it)."""
    now = now or utcnow()
    with engine.connect() as conn:
        realms = connected_realms(conn)
        repairs = realm_repairs(conn, realms)
        received = last_events_received(conn, realms)
    health = []
    for realm_id, connected_at in sorted(realms.items()):
        last_event = received.get(realm_id)
        silent_for = now - (last_event or connected_at)
        repair = repairs.get(realm_id)
        repaired_until = repair.repaired_until if repair else None
        unrepaired_for = now - (repaired_until or connected_at)
        problems = []
        if silent_for > silence_limit:
            problems.append(
                f"sent no webhook event for {_duration(silent_for)} (limit {_duration(silence_limit)}): is the "
                "app's webhook endpoint registered and the receiver reachable?"
            )
        if unrepaired_for > CDC_HORIZON - HORIZON_WARNING:
            problems.append(
                f"no CDC sweep has covered the last {_duration(unrepaired_for)}; CDC reaches back 30 days, after "
                "that only a backfill of the pulls repairs a missed event — is webhook_inbox_sensor running?"
            )
        health.append(
            RealmHealth(realm_id, last_event, silent_for, repaired_until, unrepaired_for, tuple(problems))
        )
    return health


def _duration(span: timedelta) -> str:
    hours = span.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h"
