"""The admin API under ``/__sandbox__/``: realms, seeding, tokens, faults, limits, accountant actions, counters,
the clock and webhooks. JSON in and out, no authentication."""

from __future__ import annotations

import gc
import re
from collections.abc import Callable
from dataclasses import asdict, fields
from decimal import Decimal
from typing import Any

from qbo_sandbox import faults
from qbo_sandbox.books import Books
from qbo_sandbox.clock import Clock, envelope_time
from qbo_sandbox.metering import ReadMeter
from qbo_sandbox.oauth import OAuthServer
from qbo_sandbox.seed import Seeder, SeedPlan, create_company
from qbo_sandbox.state import Limits, Realm, SandboxState
from qbo_sandbox.webhooks import WebhookConfig, WebhookDispatcher
from qbo_sandbox.wire import QboError, Request, Response, fault_response, json_response, loads

PREFIX = "/__sandbox__/"


class AdminError(Exception):
    """A bad admin request (answered as ``{"error": ...}``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _field(payload: dict[str, Any], key: str) -> Any:
    if payload.get(key) in (None, ""):
        raise AdminError(400, f"missing {key}")
    return payload[key]


class AdminApi:
    """Routes admin requests; every handler gets the parsed JSON body (and the realm, for realm routes)."""

    def __init__(
        self,
        state: SandboxState,
        clock: Clock,
        oauth: OAuthServer,
        webhooks: WebhookDispatcher,
        meter: ReadMeter | None = None,
    ) -> None:
        self.state = state
        self.clock = clock
        self.oauth = oauth
        self.webhooks = webhooks
        self.meter = meter or ReadMeter(clock)
        self._global: dict[tuple[str, str], Callable[[dict[str, Any]], Any]] = {
            ("GET", "realms"): self._list_realms,
            ("POST", "realms"): self._create_realm,
            ("GET", "counters"): lambda _: self.state.counters.report(),
            ("POST", "counters/reset"): self._reset_counters,
            ("POST", "clock"): self._advance_clock,
            ("POST", "webhooks"): self._webhooks,
            ("GET", "metering"): lambda _: self.meter.report(),
            ("POST", "metering"): self._metering,
        }
        self._per_realm: dict[tuple[str, str], Callable[[Realm, dict[str, Any]], Any]] = {
            ("POST", "seed"): self._seed,
            ("POST", "tokens"): lambda realm, _: {
                **self.oauth.issue(realm.realm_id),
                "realm_id": realm.realm_id,
            },
            ("GET", "faults"): lambda realm, _: asdict(realm.faults),
            ("POST", "faults"): self._faults,
            ("POST", "settings"): self._settings,
            ("POST", "actions"): self._action,
        }

    def handle(self, request: Request) -> Response:
        """Serve one admin request."""
        route = request.path[len(PREFIX) :].strip("/")
        try:
            payload = loads(request.body) if request.body.strip() else {}
            if not isinstance(payload, dict):
                raise AdminError(400, "the body must be a JSON object")
            match = re.fullmatch(r"realms/([^/]+)/([a-z_]+)", route)
            if match:
                handler = self._per_realm.get((request.method, match.group(2)))
                realm = self.state.realm(match.group(1))
                if handler is None or realm is None:
                    raise AdminError(404, f"no such realm or route: {route}")
                return json_response(200, handler(realm, payload))
            global_handler = self._global.get((request.method, route))
            if global_handler is None:
                raise AdminError(404, f"no such route: {request.method} {route}")
            return json_response(200, global_handler(payload))
        except AdminError as exc:
            return json_response(exc.status, {"error": str(exc)})
        except (ValueError, TypeError, KeyError, ArithmeticError, RecursionError) as exc:
            return json_response(400, {"error": f"{type(exc).__name__}: {exc}"})
        except QboError as exc:
            return fault_response(exc, self.clock.now_dt())

    # -- global routes ---------------------------------------------------------------------------------------
    def _list_realms(self, _: dict[str, Any]) -> dict[str, Any]:
        with self.state.lock:
            realms = list(self.state.realms.values())
        return {
            "default_realm_id": self.state.default_realm_id,
            "realms": [{"realm_id": r.realm_id, "company_name": r.company_name} for r in realms],
        }

    def _create_realm(self, payload: dict[str, Any]) -> dict[str, Any]:
        realm_id = payload.get("realm_id")
        if realm_id is not None and (
            not re.fullmatch(r"[0-9A-Za-z_-]{1,40}", str(realm_id)) or self.state.realm(realm_id)
        ):
            raise AdminError(409, f"realm id {realm_id!r} is invalid or taken")
        realm = create_company(self.state, self.clock, realm_id, payload.get("company_name"))
        return {"realm_id": realm.realm_id, "company_name": realm.company_name}

    def _reset_counters(self, _: dict[str, Any]) -> dict[str, Any]:
        self.state.counters.reset()
        return {"reset": True}

    def _advance_clock(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.clock.advance(float(_field(payload, "advance_seconds")))
        return {"now": envelope_time(self.clock.now_dt())}

    def _webhooks(self, payload: dict[str, Any]) -> dict[str, Any]:
        config = WebhookConfig(**payload)
        config.aggregation_seconds = float(config.aggregation_seconds)
        self.webhooks.configure(config)
        return asdict(config)

    def _metering(self, payload: dict[str, Any]) -> dict[str, Any]:
        quota = payload.get("read_quota")
        self.meter.configure(None if quota is None else int(quota))
        return self.meter.report()

    # -- realm routes ----------------------------------------------------------------------------------------
    def _seed(self, realm: Realm, payload: dict[str, Any]) -> dict[str, Any]:
        known = {f.name for f in fields(SeedPlan)}
        counts: dict[str, Any] = {key: int(value) for key, value in payload.items() if key in known}
        plan = SeedPlan(**counts)
        created = Seeder(realm, self.clock, plan).run()
        # a seeded realm lives as long as the sandbox: its objects (hundreds of thousands for a big seed) are
        # frozen out of the cyclic collector, whose full collections would walk them all again and again (they
        # are still freed when dropped: they hold no cycles)
        gc.freeze()
        return {"created": created}

    def _faults(self, realm: Realm, payload: dict[str, Any]) -> dict[str, Any]:
        return asdict(faults.configure(realm, payload))

    def _settings(self, realm: Realm, payload: dict[str, Any]) -> dict[str, Any]:
        with realm.lock:
            if "unique_doc_numbers" in payload:
                realm.unique_doc_numbers = bool(payload["unique_doc_numbers"])
            if "limits" in payload:
                realm.limits = Limits(**{**asdict(realm.limits), **payload["limits"]})
            return {"unique_doc_numbers": realm.unique_doc_numbers, "limits": asdict(realm.limits)}

    def _action(self, realm: Realm, payload: dict[str, Any]) -> dict[str, Any]:
        """Act as the accountant in QBO's UI; returns the changed object."""
        books = Books(realm, self.clock, self.state.emit)
        action = _field(payload, "action")
        if action == "set_item_price":
            return self._sparse(
                books, "Item", payload["item_id"], {"UnitPrice": Decimal(str(payload["unit_price"]))}
            )
        if action == "deactivate":
            return self._sparse(
                books, payload.get("entity", "Customer"), _field(payload, "id"), {"Active": False}
            )
        if action == "update_customer":
            return self._sparse(books, "Customer", _field(payload, "customer_id"), payload.get("fields", {}))
        if action == "update":
            return self._sparse(
                books, _field(payload, "entity"), _field(payload, "id"), payload.get("fields", {})
            )
        if action == "record_payment":
            return self._record_payment(books, payload)
        operations = {
            "delete_payment": ("delete", "Payment", "payment_id"),
            "void_payment": ("void", "Payment", "payment_id"),
            "void_invoice": ("void", "Invoice", "invoice_id"),
            "delete_invoice": ("delete", "Invoice", "invoice_id"),
        }
        if action not in operations:
            raise AdminError(400, f"unknown action {action!r}")
        operation, entity, key = operations[action]
        _, current = books.read(entity, str(_field(payload, key)))
        name, obj = getattr(books, operation)(
            entity, {"Id": current["Id"], "SyncToken": current["SyncToken"]}
        )
        return {name: obj}

    @staticmethod
    def _sparse(books: Books, entity: str, obj_id: Any, changes: dict[str, Any]) -> dict[str, Any]:
        with books.realm.lock:
            name, current = books.read(entity, str(obj_id))
            update = {**changes, "Id": current["Id"], "SyncToken": current["SyncToken"], "sparse": True}
            name, obj = books.update(name, update)
        return {name: obj}

    @staticmethod
    def _record_payment(books: Books, payload: dict[str, Any]) -> dict[str, Any]:
        _, invoice = books.read("Invoice", str(_field(payload, "invoice_id")))
        amount = Decimal(str(payload["amount"])) if payload.get("amount") is not None else invoice["Balance"]
        body = {
            "CustomerRef": {"value": invoice["CustomerRef"]["value"]},
            "TotalAmt": amount,
            "Line": [{"Amount": amount, "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}],
        }
        if payload.get("txn_date"):
            body["TxnDate"] = payload["txn_date"]
        name, obj = books.create("Payment", body)
        return {name: obj}
