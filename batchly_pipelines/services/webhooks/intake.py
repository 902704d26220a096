"""Recording a verified delivery in the inbox: one transaction, every event once, nothing asked of QuickBooks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from batchly_pipelines.services.webhooks.events import SYNCED_ENTITIES, WebhookEvent
from batchly_pipelines.store.db import Engine
from batchly_pipelines.store.inbox import realms_with_connection, record_events
from batchly_pipelines.store.schema import utcnow

UNKNOWN_REALM = "no Batchly organisation is connected to this QuickBooks company"
NOT_SYNCED = "the sync does not read this entity"


@dataclass
class Intake:
    """What one delivery added to the inbox."""

    events: int = 0
    stored: int = 0  # new pending events
    ignored: int = 0  # new events recorded as ignored (unknown realm, entity not synced)
    duplicates: int = 0  # already in the inbox (a replayed delivery, an event sent twice)
    realms: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int | list[str]]:
        """The numbers, for the receiver's answer and its log."""
        return {
            "events": self.events,
            "stored": self.stored,
            "ignored": self.ignored,
            "duplicates": self.duplicates,
            "realms": self.realms,
        }


def record_delivery(engine: Engine, events: Sequence[WebhookEvent], now: datetime | None = None) -> Intake:
    """Store the events that are new to the inbox: pending for a realm Batchly knows and an entity the sync reads,
    ignored (with the reason) otherwise."""
    received_at = now or utcnow()
    intake = Intake(events=len(events), realms=sorted({event.realm_id for event in events}))
    if not events:
        return intake
    with engine.begin() as conn:
        known = realms_with_connection(conn, intake.realms)
        rows = []
        for event in events:
            note = (
                UNKNOWN_REALM
                if event.realm_id not in known
                else NOT_SYNCED
                if event.entity_type not in SYNCED_ENTITIES
                else None
            )
            rows.append({**event.as_row(), "status": "pending" if note is None else "ignored", "note": note})
        inserted = record_events(conn, rows, received_at)
    for row in rows:
        if row["event_id"] in inserted:
            inserted.discard(row["event_id"])  # a repeat inside the delivery counts as a duplicate
            if row["status"] == "pending":
                intake.stored += 1
            else:
                intake.ignored += 1
        else:
            intake.duplicates += 1
    return intake
