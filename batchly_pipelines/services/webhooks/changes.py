"""Events turned into pull requests: per realm, which objects of which entity to read, and which were removed.

Events only say *which* objects changed. Whatever their number, order or operations, a realm's request reads each
object once, as QuickBooks has it now; the order in which events arrived never decides anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from batchly_pipelines.services.webhooks.events import REMOVALS, SYNCED_ENTITIES, WebhookEvent


@dataclass
class EntityChanges:
    """The objects of one entity a realm's events named; ``removed``: those notified as deleted or merged away,
    with the latest time notified."""

    ids: set[str] = field(default_factory=set)
    removed: dict[str, datetime | None] = field(default_factory=dict)


@dataclass
class PullRequest:
    """What one realm's targeted pull reads: the notified objects per synced entity."""

    realm_id: str
    events: int = 0
    entities: dict[str, EntityChanges] = field(default_factory=dict)

    def ids(self, entity: str) -> set[str]:
        """The notified ids of ``entity`` (empty when none)."""
        changes = self.entities.get(entity)
        return set(changes.ids) if changes else set()

    def removed(self, entity: str) -> dict[str, datetime | None]:
        """The ids of ``entity`` notified as removed, with when."""
        changes = self.entities.get(entity)
        return dict(changes.removed) if changes else {}


def pull_requests(events: Iterable[WebhookEvent]) -> dict[str, PullRequest]:
    """One request per realm, coalescing every event of the synced entities (repeats read once)."""
    requests: dict[str, PullRequest] = {}
    for event in events:
        request = requests.setdefault(event.realm_id, PullRequest(event.realm_id))
        request.events += 1
        if event.entity_type not in SYNCED_ENTITIES:
            continue
        changes = request.entities.setdefault(event.entity_type, EntityChanges())
        changes.ids.add(event.entity_id)
        if event.operation in REMOVALS:
            known = changes.removed.get(event.entity_id)
            when = event.event_time
            changes.removed[event.entity_id] = max(known, when) if known and when else known or when
    return requests
