"""The data API, ``/v3/company/{realmId}/...``: auth, throttling, faults, requestid replay, and the routes."""

from __future__ import annotations

import logging
import time
from typing import Any

from qbo_sandbox import faults
from qbo_sandbox.books import Books, entity_spec
from qbo_sandbox.clock import Clock, envelope_time
from qbo_sandbox.metering import ReadMeter, is_read
from qbo_sandbox.oauth import AuthError, OAuthServer
from qbo_sandbox.state import Realm, SandboxState
from qbo_sandbox.throttle import Throttle, Throttled, throttled_response
from qbo_sandbox.wire import (
    QboError,
    Request,
    Response,
    business,
    fault_response,
    invalid,
    json_response,
    required,
    system_fault,
)

logger = logging.getLogger(__name__)

MAX_BATCH_ITEMS = 30
REQUESTID_LIMIT = 50
BATCH_REQUESTID_LIMIT = 36
_BATCH_KEYS = {"bId", "operation", "optionsData"}


class DataApi:
    """Serves one request of the data API for a realm."""

    def __init__(
        self,
        state: SandboxState,
        clock: Clock,
        oauth: OAuthServer,
        throttle: Throttle,
        latency_ms: float = 0.0,
        meter: ReadMeter | None = None,
    ) -> None:
        self.state = state
        self.clock = clock
        self.oauth = oauth
        self.throttle = throttle
        self.latency_ms = latency_ms
        self.meter = meter or ReadMeter(clock)

    def handle(self, request: Request, realm_id: str, parts: list[str]) -> Response:
        """Authenticate, admit through the throttle, inject faults, replay or execute."""
        try:
            self.oauth.authenticate(request.headers.get("authorization"), realm_id)
        except AuthError as exc:
            return exc.response
        realm = self.state.realm(realm_id)
        if realm is None or not parts or not parts[0]:
            return self._fault(
                QboError(404, "610", "Object Not Found", f"Unknown company or path: {request.path}")
            )
        resource = parts[0].lower()
        self.state.counters.add(realm_id, f"request:{request.method} {resource}")
        metered = is_read(request.method, resource)
        if metered and self.meter.blocked(self.oauth.client_id):  # the app's monthly reads are used up
            self.state.counters.add(realm_id, "read_quota_refused")
            return throttled_response(self.clock)
        try:
            with self.throttle.admit(realm_id, realm.limits, batch=resource == "batch"):
                self.state.counters.record_max(realm_id, "peak_in_flight", self.throttle.in_flight(realm_id))
                response = self._admitted(request, realm, parts)
        except Throttled:
            self.state.counters.add(realm_id, "throttled")
            return throttled_response(self.clock)
        if metered and response.status == 200:
            self.meter.count(self.oauth.client_id)
        return response

    def _admitted(self, request: Request, realm: Realm, parts: list[str]) -> Response:
        if self.latency_ms:
            time.sleep(self.clock.scaled(self.latency_ms / 1000.0))
        injected = faults.before_request(realm, self.clock)
        if injected is not None:
            return injected
        resource = parts[0].lower()
        is_write = request.method == "POST" and resource not in ("query", "cdc")
        requestid = request.query.get("requestid")
        if requestid is None:
            response = self._execute(request, realm, parts)
        else:
            limit = BATCH_REQUESTID_LIMIT if resource == "batch" else REQUESTID_LIMIT
            if len(requestid) > limit:
                detail = (
                    f"Business Validation Error: You cannot enter more than {limit} characters in the request_id "
                    f"field. You tried entering {requestid[:10]}..., which is {len(requestid)} characters."
                )
                return self._fault(business(detail, "requestid"))
            with realm.lock:
                replay = realm.replies.get(requestid)
                if replay is None:
                    response = self._execute(request, realm, parts)
                    realm.remember_reply(requestid, response.status, response.body)
                    self.state.dirty = True  # stored answers are persisted with the state
            if replay is not None:
                self.state.counters.add(realm.realm_id, "replays")
                response = Response(replay[0], replay[1])
        if is_write and faults.roll(realm, "drop_after_write"):
            self.state.counters.add(realm.realm_id, "dropped_connections")
            return Response(0, drop=True)
        return response

    def _fault(self, error: QboError) -> Response:
        return fault_response(error, self.clock.now_dt())

    def _time(self) -> str:
        return envelope_time(self.clock.now_dt())

    def _execute(self, request: Request, realm: Realm, parts: list[str]) -> Response:
        try:
            return json_response(200, {**self._route(request, realm, parts), "time": self._time()})
        except QboError as error:
            return self._fault(error)

    def _route(self, request: Request, realm: Realm, parts: list[str]) -> dict[str, Any]:
        books = Books(realm, self.clock, self.state.emit)
        resource = parts[0].lower()
        if resource == "query":
            statement = request.query.get("query") if request.method == "GET" else request.text()
            if not statement:
                raise required("query")
            return {"QueryResponse": books.query(statement)}
        if resource == "cdc" and request.method == "GET":
            entities = [name for name in request.query.get("entities", "").split(",") if name.strip()]
            if not entities:
                raise required("entities")
            if not request.query.get("changedSince"):
                raise required("changedSince")
            return {"CDCResponse": [{"QueryResponse": books.cdc(entities, request.query["changedSince"])}]}
        if resource == "batch" and request.method == "POST":
            return {"BatchItemResponse": self._batch(books, request.json())}
        if request.method == "GET" and len(parts) == 2:
            spec = entity_spec(resource)
            obj_id = "1" if spec.name == "CompanyInfo" and parts[1] == realm.realm_id else parts[1]
            name, obj = books.read(spec.name, obj_id)
            return {name: obj}
        if request.method == "POST" and len(parts) == 1:
            payload = request.json()
            if not isinstance(payload, dict):
                raise invalid("The body must be an object")
            name, obj = self._write(books, resource, payload, request.query)
            return {name: obj}
        raise invalid(f"Unsupported request: {request.path}")

    @staticmethod
    def _write(books: Books, entity: str, payload: dict[str, Any], query: dict[str, str]) -> tuple[str, dict]:
        operation = query.get("operation", "").lower()
        if operation == "delete":
            return books.delete(entity, payload)
        if operation == "void" or (operation == "update" and query.get("include", "").lower() == "void"):
            return books.void(entity, payload)
        if operation == "update" or payload.get("Id") not in (None, ""):
            return books.update(entity, payload)
        return books.create(entity, payload)

    def _batch(self, books: Books, payload: Any) -> list[dict[str, Any]]:
        items = payload.get("BatchItemRequest") if isinstance(payload, dict) else None
        if not isinstance(items, list) or not items:
            raise required("BatchItemRequest")
        if len(items) > MAX_BATCH_ITEMS:
            raise business(
                f"The batch has {len(items)} items; at most {MAX_BATCH_ITEMS} are allowed", "BatchItemRequest"
            )
        realm = books.realm
        with realm.lock:
            realm.hidden = set()
            try:
                return [self._batch_item(books, item) for item in items]
            finally:
                realm.hidden = None

    def _batch_item(self, books: Books, item: Any) -> dict[str, Any]:
        bid = item.get("bId") if isinstance(item, dict) else None
        try:
            if not isinstance(item, dict):
                raise invalid("A batch item must be an object")
            if "Query" in item:
                return {"bId": bid, "QueryResponse": books.query(str(item["Query"]))}
            entities = [key for key in item if key not in _BATCH_KEYS]
            if len(entities) != 1 or not isinstance(item[entities[0]], dict):
                raise invalid("One entity per batch item")
            operation = str(item.get("operation", "create")).lower()
            if operation not in ("create", "update", "delete", "void"):
                raise invalid(f"operation {operation}")
            name, obj = getattr(books, operation)(entities[0], item[entities[0]])
            return {"bId": bid, name: obj}
        except QboError as error:
            return {"bId": bid, "Fault": error.fault()}
        except Exception:  # one broken item must not lose the answers (and the requestid) of the others
            logger.exception("sandbox error in batch item %r", bid)
            return {"bId": bid, "Fault": system_fault().fault()}
