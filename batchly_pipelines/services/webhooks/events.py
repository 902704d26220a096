"""Intuit webhook deliveries in both formats, parsed into events (qbo-api-facts §6 and §9).

- Legacy: ``{"eventNotifications": [{"realmId", "dataChangeEvent": {"entities": [{"name", "id", "operation",
  "lastUpdated"}]}}]}``. Its entries carry no id: an event's id is a digest of realm, entity, id, operation and time,
  so the same change delivered twice has the same id.
- CloudEvents (mandatory from 2026): a JSON array of ``{"specversion": "1.0", "id", "source", "type":
  "qbo.<entity>.<verb>.v1", "time", "intuitentityid", "intuitaccountid", "data": {}}``; one delivery may mix realms.

A delivery is all or nothing: one malformed event makes it a :class:`BadDelivery` (answered 400, nothing stored).
Fields the sync does not use are ignored, so additions to either format do not break intake.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# the entities the pull reads; events of any other entity are recorded and ignored. A refund receipt changes no
# invoice's balance (no Invoice event comes with it): its own events re-read the invoices it names.
SYNCED_ENTITIES = ("Customer", "Item", "Invoice", "Payment", "RefundReceipt")
# the deliveries' spellings of the operations that remove an object (it is then not found by a read)
REMOVALS = frozenset({"Delete", "Merge"})

ID_MAX = 32  # realm and entity ids, as qbo_mirror stores them
EVENT_ID_MAX = 200
NAME_MAX = 32
OPERATION_MAX = 16
_CANONICAL = {name.lower(): name for name in SYNCED_ENTITIES}
_VERBS = {
    "created": "Create",
    "updated": "Update",
    "deleted": "Delete",
    "merged": "Merge",
    "voided": "Void",
    "emailed": "Emailed",
}


class BadDelivery(ValueError):
    """A webhook body that is not a delivery of either format (the receiver answers 400 and stores nothing)."""


@dataclass(frozen=True)
class WebhookEvent:
    """One change QuickBooks notified: which object of which company, what happened and when."""

    event_id: str
    realm_id: str
    entity_type: str
    entity_id: str
    operation: str
    event_time: datetime | None

    def as_row(self) -> dict[str, Any]:
        """The inbox columns of the event."""
        return {
            "event_id": self.event_id,
            "realm_id": self.realm_id,
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
            "operation": self.operation,
            "event_time": self.event_time,
        }


def parse_delivery(body: bytes) -> list[WebhookEvent]:
    """The events of a delivery in either format, in the order given; raises :class:`BadDelivery`."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadDelivery("the body is not JSON") from None
    if isinstance(payload, list):
        return [_cloud_event(item, n) for n, item in enumerate(payload)]
    if isinstance(payload, dict) and "eventNotifications" in payload:
        return _legacy(payload["eventNotifications"])
    raise BadDelivery("expected a CloudEvents array or a legacy {'eventNotifications': [...]} object")


def _legacy(notifications: Any) -> list[WebhookEvent]:
    events = []
    for n, notification in enumerate(_list(notifications, "eventNotifications")):
        where = f"eventNotifications[{n}]"
        notification = _object(notification, where)
        realm_id = _text(notification, "realmId", where, ID_MAX)
        change = _object(notification.get("dataChangeEvent"), f"{where}.dataChangeEvent")
        for m, entity in enumerate(_list(change.get("entities"), f"{where}.dataChangeEvent.entities")):
            at = f"{where}.dataChangeEvent.entities[{m}]"
            entity = _object(entity, at)
            name = _canonical(_text(entity, "name", at, NAME_MAX))
            entity_id = _text(entity, "id", at, ID_MAX)
            operation = _text(entity, "operation", at, OPERATION_MAX)
            stamp = _text(entity, "lastUpdated", at, 64)
            digest = hashlib.sha256(
                "\n".join((realm_id, name, entity_id, operation, stamp)).encode()
            ).hexdigest()
            events.append(
                WebhookEvent(
                    f"legacy:{digest}",
                    realm_id,
                    name,
                    entity_id,
                    operation,
                    _instant(stamp, f"{at}.lastUpdated"),
                )
            )
    return events


def _cloud_event(item: Any, n: int) -> WebhookEvent:
    where = f"[{n}]"
    event = _object(item, where)
    if event.get("specversion") != "1.0":
        raise BadDelivery(f"{where}.specversion: expected '1.0'")
    kind = _text(event, "type", where, 200)
    parts = kind.split(".")
    if len(parts) < 3 or parts[0] != "qbo" or not parts[1] or not parts[2]:
        raise BadDelivery(f"{where}.type: expected qbo.<entity>.<operation>.v1, got {kind!r}")
    operation = _VERBS.get(parts[2], parts[2])
    if len(operation) > OPERATION_MAX:
        raise BadDelivery(f"{where}.type: the operation {parts[2]!r} is too long")
    time = event.get("time")
    if time is not None and not isinstance(time, str):
        raise BadDelivery(f"{where}.time: expected a timestamp")
    return WebhookEvent(
        event_id=_text(event, "id", where, EVENT_ID_MAX),
        realm_id=_text(event, "intuitaccountid", where, ID_MAX),
        entity_type=_canonical(parts[1][:NAME_MAX]),
        entity_id=_text(event, "intuitentityid", where, ID_MAX),
        operation=operation,
        event_time=_instant(time, f"{where}.time") if time else None,
    )


def _canonical(name: str) -> str:
    """The QuickBooks spelling of a synced entity's name (``customer`` → ``Customer``); others as given."""
    return _CANONICAL.get(name.lower(), name)


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise BadDelivery(f"{where}: expected an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise BadDelivery(f"{where}: expected a list")
    return value


def _text(obj: Mapping[str, Any], key: str, where: str, limit: int) -> str:
    value = obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # ids sent as numbers
    if not isinstance(value, str) or not value.strip():
        raise BadDelivery(f"{where}.{key}: expected a non-empty string")
    if len(value) > limit:
        raise BadDelivery(f"{where}.{key}: longer than {limit} characters")
    return value.strip()


def _instant(text: str, where: str) -> datetime:
    """An ISO 8601 instant as aware UTC (a time without offset is taken as UTC)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadDelivery(f"{where}: {text!r} is not an ISO 8601 time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
