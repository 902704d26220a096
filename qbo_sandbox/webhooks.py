"""Signed webhook delivery (legacy and CloudEvents formats) with Intuit's retry schedule, scaled by the clock.

Events are gathered over an aggregation window (1 s by default; Intuit's production aggregates over 1, 3 or 5
minutes) into one notification, which mixes realms. Notifications go out one at a time, in order: one that is not
acknowledged (anything but a 200 within 3 s) is retried on Intuit's schedule, and the later ones wait behind it —
"you may not receive subsequent events until you correctly acknowledge the first".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

from qbo_sandbox.clock import Clock
from qbo_sandbox.state import Counters, Event
from qbo_sandbox.wire import dumps

RETRY_SCHEDULE = (10.0, 20.0, 30.0, 300.0, 1200.0, 7200.0, 14400.0, 21600.0)  # then every 6 h
AGGREGATION_SECONDS = 1.0  # events are gathered this long (scaled) before a notification is sent
DELIVERY_TIMEOUT = 3.0
FORMATS = ("legacy", "cloudevents")
_OPERATION_VERB = {
    "Create": "created",
    "Update": "updated",
    "Delete": "deleted",
    "Void": "voided",
    "Merge": "merged",
}


@dataclass
class _Notification:
    """One signed notification: its target, when it is next due and how often it was tried."""

    body: bytes
    url: str
    signature: str
    due: float
    attempts: int = 0


@dataclass
class WebhookConfig:
    """Where and how to deliver: no ``url`` means webhooks are off; ``aggregation_seconds`` (scaled) is how long
    events are gathered into one notification."""

    url: str | None = None
    verifier: str = ""
    format: str = "legacy"
    aggregation_seconds: float = AGGREGATION_SECONDS


def sign(verifier: str, body: bytes) -> str:
    """The ``intuit-signature`` header: base64(HMAC-SHA256(verifier, raw body))."""
    return base64.b64encode(hmac.new(verifier.encode(), body, hashlib.sha256).digest()).decode()


def _utc(event: Event) -> str:
    return (
        event.last_updated.strftime("%Y-%m-%dT%H:%M:%S.") + f"{event.last_updated.microsecond // 1000:03d}Z"
    )


def legacy_payload(events: list[Event]) -> dict[str, Any]:
    """``{"eventNotifications": [{"realmId", "dataChangeEvent": {"entities": [...]}}]}``, one entry per realm."""
    by_realm: dict[str, list[dict[str, str]]] = defaultdict(list)
    for event in events:
        by_realm[event.realm_id].append(
            {
                "name": event.entity,
                "id": event.entity_id,
                "operation": event.operation,
                "lastUpdated": _utc(event),
            }
        )
    return {
        "eventNotifications": [
            {"realmId": realm, "dataChangeEvent": {"entities": entities}}
            for realm, entities in by_realm.items()
        ]
    }


def cloudevents_payload(events: list[Event]) -> list[dict[str, Any]]:
    """A JSON array of CloudEvents 1.0 (``qbo.<entity>.<verb>.v1``)."""
    return [
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "intuit.qbo.sandbox",
            "type": f"qbo.{event.entity.lower()}.{_OPERATION_VERB.get(event.operation, 'updated')}.v1",
            "datacontenttype": "application/json",
            "time": _utc(event),
            "intuitentityid": event.entity_id,
            "intuitaccountid": event.realm_id,
            "data": {},
        }
        for event in events
    ]


class WebhookDispatcher:
    """Collects change events and delivers them from a background thread, in order, retrying each until a 200."""

    def __init__(self, clock: Clock, counters: Counters, config: WebhookConfig | None = None) -> None:
        self.clock = clock
        self.counters = counters
        self.config = config or WebhookConfig()
        self._cond = threading.Condition()
        self._pending: list[Event] = []
        self._flush_at: float | None = None
        self._outbox: deque[_Notification] = deque()  # the head is tried; the rest wait behind it
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="qbo-sandbox-webhooks", daemon=True)

    def configure(self, config: WebhookConfig) -> None:
        """Change the target; notifications already queued keep their original target."""
        if config.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}")
        if not config.aggregation_seconds >= 0:
            raise ValueError("aggregation_seconds must be 0 or more")
        with self._cond:
            self.config = config

    def start(self) -> None:
        """Start the delivery thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the delivery thread (undelivered notifications are dropped)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def on_event(self, event: Event) -> None:
        """State listener: queue an event for the next notification."""
        with self._cond:
            if not self.config.url:
                return
            self._pending.append(event)
            if self._flush_at is None:
                self._flush_at = time.monotonic() + self.clock.scaled(self.config.aggregation_seconds)
                self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                due = self._next_due()
                while not self._stopped and (due is None or due > time.monotonic()):
                    self._cond.wait(None if due is None else max(0.0, due - time.monotonic()))
                    due = self._next_due()
                if self._stopped:
                    return
                self._flush_pending()
                head = self._outbox[0] if self._outbox and self._outbox[0].due <= time.monotonic() else None
            if head is not None:
                self._deliver(head)

    def _next_due(self) -> float | None:
        candidates = [self._outbox[0].due] if self._outbox else []
        if self._flush_at is not None:
            candidates.append(self._flush_at)
        return min(candidates, default=None)

    def _flush_pending(self) -> None:
        if self._flush_at is None or self._flush_at > time.monotonic() or not self.config.url:
            return
        events, self._pending, self._flush_at = self._pending, [], None
        payload: Any = (
            legacy_payload(events) if self.config.format == "legacy" else cloudevents_payload(events)
        )
        body = dumps(payload)
        signature = sign(self.config.verifier, body)
        self._outbox.append(_Notification(body, self.config.url, signature, due=time.monotonic()))

    def _deliver(self, notification: _Notification) -> None:
        content_type = (
            "application/cloudevents-batch+json" if notification.body.startswith(b"[") else "application/json"
        )
        request = urllib.request.Request(
            notification.url,
            data=notification.body,
            method="POST",
            headers={"Content-Type": content_type, "intuit-signature": notification.signature},
        )
        try:
            with urllib.request.urlopen(request, timeout=DELIVERY_TIMEOUT) as response:
                ok = response.status == 200
        except (urllib.error.URLError, OSError):
            ok = False
        self.counters.add("global", "webhook_deliveries" if ok else "webhook_failures")
        with self._cond:
            if ok:
                self._outbox.popleft()
                if self._outbox:  # the next one waited behind it: it goes now
                    self._outbox[0].due = min(self._outbox[0].due, time.monotonic())
            else:
                delay = RETRY_SCHEDULE[min(notification.attempts, len(RETRY_SCHEDULE) - 1)]
                notification.attempts += 1
                notification.due = time.monotonic() + self.clock.scaled(delay)
            self._cond.notify_all()
