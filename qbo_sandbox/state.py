"""In-memory companies (realms), OAuth tokens and counters; thread-safe, optionally persisted to a JSON file."""

from __future__ import annotations

import base64
import os
import random
import tempfile
import threading
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from qbo_sandbox.index import TimeIndex
from qbo_sandbox.wire import clone, dumps, loads

REPLY_RETENTION = 10_000


@dataclass
class FaultConfig:
    """Per-realm fault injection: probabilities per request, plus the shared-second mode."""

    error_500: float = 0.0
    error_503: float = 0.0
    drop_after_write: float = 0.0
    token_drop_after_refresh: float = 0.0
    slow: float = 0.0
    slow_ms: int = 0
    same_second: bool = False
    seed: int | None = None


@dataclass
class Limits:
    """Per-realm throttle limits (Intuit's documented values); 0 disables one limit."""

    per_minute: int = 500
    per_second: int = 10
    concurrent: int = 10
    batch_per_minute: int = 40


@dataclass
class Event:
    """One change, as webhooks report it."""

    realm_id: str
    entity: str
    entity_id: str
    operation: str  # Create, Update, Delete, Void
    last_updated: datetime


class Realm:
    """One QBO company: its objects, deletion tombstones, and the per-realm settings. Guard with ``lock``.

    Write objects and tombstones through :meth:`put`, :meth:`remove` and :meth:`bury`, which keep the time indexes
    (:meth:`time_index`) current; an index that finds its store changed behind its back is rebuilt.
    """

    def __init__(self, realm_id: str, company_name: str) -> None:
        self.realm_id = realm_id
        self.company_name = company_name
        self.lock = threading.RLock()
        self.objects: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.tombstones: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.next_id = 1
        self.next_doc_number = 1001
        self.unique_doc_numbers = True
        # invoice or credit memo id -> payment id -> amount the payment applies to it (or uses of its credit)
        self.applied: dict[str, dict[str, Decimal]] = defaultdict(dict)
        self.replies: OrderedDict[str, tuple[int, bytes]] = (
            OrderedDict()
        )  # requestid -> original (status, body)
        self.indexes: dict[str, dict[str, set[str]]] = {}  # uniqueness indexes, rebuilt lazily by Books
        self.time_indexes: dict[
            tuple[str, bool], TimeIndex
        ] = {}  # (entity, tombstones?) -> index, built lazily
        self.hidden: set[tuple[str, str]] | None = None  # objects created by the batch being executed
        self.faults = FaultConfig()
        self.rng = random.Random()
        self.limits = Limits()
        self.pinned_second: datetime | None = None

    def remember_reply(self, requestid: str, status: int, body: bytes) -> None:
        """Keep the original answer to a requestid (the oldest are forgotten beyond ``REPLY_RETENTION``)."""
        self.replies[requestid] = (status, body)
        while len(self.replies) > REPLY_RETENTION:
            self.replies.popitem(last=False)

    def put(self, entity: str, obj: dict[str, Any]) -> None:
        """Store a (new version of an) object under its ``Id``."""
        self.objects[entity][obj["Id"]] = obj
        self._indexed(entity, False, obj["Id"], obj)

    def remove(self, entity: str, obj_id: str) -> None:
        """Drop an object (its tombstone is stored with :meth:`bury`)."""
        del self.objects[entity][obj_id]
        index = self.time_indexes.get((entity, False))
        if index is not None:
            index.remove(obj_id)

    def bury(self, entity: str, tombstone: dict[str, Any]) -> None:
        """Store the deletion tombstone of an object, for CDC."""
        self.tombstones[entity][tombstone["Id"]] = tombstone
        self._indexed(entity, True, tombstone["Id"], tombstone)

    def _indexed(self, entity: str, tombstones: bool, key: str, obj: dict[str, Any]) -> None:
        index = self.time_indexes.get((entity, tombstones))
        if index is not None and not index.put(key, obj):
            del self.time_indexes[(entity, tombstones)]

    def time_index(self, entity: str, tombstones: bool = False) -> TimeIndex:
        """The (LastUpdatedTime, Id) index of an entity's objects or tombstones; check ``regular`` before use."""
        store = (self.tombstones if tombstones else self.objects)[entity]
        index = self.time_indexes.get((entity, tombstones))
        if index is None or index.store is not store or not index.regular or len(index) != len(store):
            index = self.time_indexes[(entity, tombstones)] = TimeIndex(store)
        return index

    def allocate_id(self) -> str:
        """The next object id (one sequence per company)."""
        value = self.next_id
        self.next_id += 1
        return str(value)

    def snapshot(self) -> dict[str, Any]:
        """The persistent part of the realm as JSON-ready data (stored ``requestid`` answers included)."""
        return {
            "realm_id": self.realm_id,
            "company_name": self.company_name,
            "next_id": self.next_id,
            "next_doc_number": self.next_doc_number,
            "unique_doc_numbers": self.unique_doc_numbers,
            "objects": self.objects,
            "tombstones": self.tombstones,
            "replies": [_encode_reply(key, status, body) for key, (status, body) in self.replies.items()],
        }

    @classmethod
    def restore(cls, data: dict[str, Any]) -> Realm:
        """Rebuild a realm from :meth:`snapshot` output (the payment index is rebuilt from the payments)."""
        realm = cls(data["realm_id"], data["company_name"])
        realm.next_id = data["next_id"]
        realm.next_doc_number = data["next_doc_number"]
        realm.unique_doc_numbers = data["unique_doc_numbers"]
        realm.objects.update(data["objects"])
        realm.tombstones.update(data["tombstones"])
        for reply in data.get("replies", []):  # absent in state files written before replies were persisted
            realm.remember_reply(*_decode_reply(reply))
        for payment in realm.objects["Payment"].values():
            for line in payment.get("Line", []):
                for link in line["LinkedTxn"]:
                    realm.applied[link["TxnId"]][payment["Id"]] = Decimal(str(line["Amount"]))
        return realm


def _encode_reply(requestid: str, status: int, body: bytes) -> dict[str, Any]:
    try:
        return {"requestid": requestid, "status": status, "body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"requestid": requestid, "status": status, "body_b64": base64.b64encode(body).decode("ascii")}


def _decode_reply(reply: dict[str, Any]) -> tuple[str, int, bytes]:
    requestid, status = str(reply["requestid"]), int(reply["status"])
    if "body_b64" in reply:
        return requestid, status, base64.b64decode(reply["body_b64"])
    return requestid, status, str(reply["body"]).encode("utf-8")


@dataclass
class TokenRecord:
    """An authorization code, access token or refresh token."""

    kind: str  # "code", "access", "refresh"
    realm_id: str
    grant_id: str
    expires_at: float
    redirect_uri: str = ""
    used_at: float | None = None
    successor: dict[str, Any] | None = None  # the token response a refresh token was exchanged for
    scope: str = ""  # the grant's scopes, space-separated ("" = the accounting scope alone)
    hard_expires_at: float | None = (
        None  # the grant's cap (5 years from consent): no refresh token outlives it
    )


class Counters:
    """Request and event counts for the admin API."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()

    def add(self, scope: str, name: str, amount: int = 1) -> None:
        """Count ``amount`` under a scope (a realm id or "global") and a name."""
        with self._lock:
            self._counts[(scope, name)] += amount

    def record_max(self, scope: str, name: str, value: int) -> None:
        """Keep under a scope and a name the highest ``value`` recorded (e.g. ``peak_in_flight``)."""
        with self._lock:
            if value > self._counts[(scope, name)]:
                self._counts[(scope, name)] = value

    def report(self) -> dict[str, Any]:
        """All counts: ``{"global": {...}, "realms": {realm: {"requests": {endpoint: n}, "throttled": n, ...}}}``."""
        with self._lock:
            items = list(self._counts.items())
        report: dict[str, Any] = {"global": {}, "realms": {}}
        for (scope, name), count in items:
            if scope == "global":
                report["global"][name] = count
                continue
            realm = report["realms"].setdefault(scope, {"requests": {}, "requests_total": 0})
            if name.startswith("request:"):
                realm["requests"][name.removeprefix("request:")] = count
                realm["requests_total"] += count
            else:
                realm[name] = count
        return report

    def reset(self) -> None:
        """Zero every count."""
        with self._lock:
            self._counts.clear()


class SandboxState:
    """Every realm, token and counter of one sandbox; optionally loaded from and saved to ``path``."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.realms: dict[str, Realm] = {}
        self.default_realm_id: str | None = None
        self.tokens: dict[str, TokenRecord] = {}
        self.revoked_grants: set[str] = set()
        self.counters = Counters()
        self.listeners: list[Callable[[Event], None]] = []
        self.dirty = False
        if path is not None and path.exists():
            self._load(path)

    def realm(self, realm_id: str) -> Realm | None:
        """A realm by id."""
        with self.lock:
            return self.realms.get(realm_id)

    def add_realm(self, realm: Realm) -> None:
        """Register a realm; the first one becomes the default for the OAuth consent screen."""
        with self.lock:
            self.realms[realm.realm_id] = realm
            if self.default_realm_id is None:
                self.default_realm_id = realm.realm_id
            self.dirty = True

    def emit(self, event: Event) -> None:
        """Record an applied write and pass it to the listeners (webhooks)."""
        self.counters.add(event.realm_id, "writes_applied")
        self.dirty = True
        for listener in self.listeners:
            listener(event)

    def save(self) -> None:
        """Write the state atomically to ``path`` (no-op without one)."""
        if self.path is None:
            return
        with self.lock:
            realms = list(self.realms.values())
            tokens = {key: asdict(record) for key, record in self.tokens.items()}
            revoked = sorted(self.revoked_grants)
            self.dirty = False
        snapshots = []
        for realm in realms:
            with realm.lock:
                snapshots.append(clone(realm.snapshot()))  # a copy, so the lock is not held while writing
        payload = {
            "default_realm_id": self.default_realm_id,
            "realms": snapshots,
            "tokens": tokens,
            "revoked_grants": revoked,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(dumps(payload))
        os.replace(tmp, self.path)

    def _load(self, path: Path) -> None:
        data = loads(path.read_bytes())
        for item in data["realms"]:
            realm = Realm.restore(item)
            self.realms[realm.realm_id] = realm
        self.default_realm_id = data.get("default_realm_id")
        self.tokens = {key: TokenRecord(**record) for key, record in data["tokens"].items()}
        self.revoked_grants = set(data["revoked_grants"])
