"""A client for the sandbox's admin API (``{base_url}/__sandbox__/``): the one way tests, benchmarks and the local
commands drive a running sandbox — realms, seeding, tokens, faults, limits, accountant actions, counters, the clock
and webhooks.

It speaks HTTP (``requests``) so it works the same against an in-process ``SandboxServer`` and a ``qbo-sandbox serve``
process; the server itself never imports it. Answers are parsed with amounts as ``Decimal``; anything but a 200
raises :class:`SandboxAdminError` carrying the status and the parsed body (``{"error": …}`` or a QBO ``Fault``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import requests

from qbo_sandbox.wire import dumps, loads

PREFIX = "/__sandbox__/"  # = qbo_sandbox.admin.PREFIX; not imported, so the client loads none of the server
DEFAULT_TIMEOUT = 30.0


class SandboxAdminError(requests.HTTPError):
    """The admin API answered something other than 200 (a ``requests.HTTPError``, so an ``OSError`` too)."""

    def __init__(self, method: str, path: str, response: requests.Response, body: Any) -> None:
        super().__init__(
            f"{method} {PREFIX}{path} answered {response.status_code}: {body}", response=response
        )
        self.status = response.status_code
        self.body = body

    @property
    def fault_code(self) -> str | None:
        """The code of the first QBO fault in the body (actions answer QBO faults), else None."""
        if isinstance(self.body, dict) and isinstance(self.body.get("Fault"), dict):
            errors = self.body["Fault"].get("Error") or [{}]
            return str(errors[0].get("code"))
        return None


class SandboxAdmin:
    """The admin API of the sandbox answering at ``base_url`` (``http://host:port``)."""

    def __init__(self, base_url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """One admin request (``path`` relative to ``/__sandbox__/``); the parsed answer of a 200."""
        response = requests.request(
            method,
            f"{self.base_url}{PREFIX}{path}",
            data=dumps(dict(body or {})),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            timeout=self.timeout,
        )
        try:
            payload = loads(response.content) if response.content else None
        except ValueError:
            payload = response.text
        if response.status_code != 200:
            raise SandboxAdminError(method, path, response, payload)
        return payload

    # -- companies -------------------------------------------------------------------------------------------
    def realms(self) -> dict[str, Any]:
        """``{"default_realm_id", "realms": [{"realm_id", "company_name"}]}``."""
        return dict(self.call("GET", "realms"))

    def new_realm(self, company_name: str | None = None, realm_id: str | None = None) -> str:
        """Create a company (with its chart of accounts) and return its realm id; 409 if ``realm_id`` is taken."""
        body: dict[str, Any] = {}
        if company_name is not None:
            body["company_name"] = company_name
        if realm_id is not None:
            body["realm_id"] = realm_id
        return str(self.call("POST", "realms", body)["realm_id"])

    def seed(self, realm_id: str, **plan: int) -> dict[str, list[str]]:
        """Seed realistic data (``customers``, ``items``, ``invoices``, ``payments``, ``seed``, ``days``); the ids
        created per entity."""
        created = self.call("POST", f"realms/{realm_id}/seed", plan)["created"]
        return {entity: [str(obj_id) for obj_id in ids] for entity, ids in created.items()}

    def tokens(self, realm_id: str) -> dict[str, Any]:
        """A fresh grant for the realm: the token endpoint's answer plus ``realm_id``."""
        return dict(self.call("POST", f"realms/{realm_id}/tokens"))

    def access_token(self, realm_id: str) -> str:
        """Just the access token of a fresh grant."""
        return str(self.tokens(realm_id)["access_token"])

    # -- faults and settings ---------------------------------------------------------------------------------
    def faults(self, realm_id: str) -> dict[str, Any]:
        """The realm's fault settings."""
        return dict(self.call("GET", f"realms/{realm_id}/faults"))

    def set_faults(self, realm_id: str, **settings: float | int | bool) -> dict[str, Any]:
        """Replace the realm's fault settings (``error_500``, ``error_503``, ``drop_after_write``,
        ``token_drop_after_refresh``, ``slow``, ``slow_ms``, ``same_second``, ``seed``); omitted ones reset.
        ``set_faults(realm)`` turns every fault off."""
        return dict(self.call("POST", f"realms/{realm_id}/faults", settings))

    def settings(
        self,
        realm_id: str,
        *,
        unique_doc_numbers: bool | None = None,
        limits: Mapping[str, int] | None = None,
    ) -> dict[str, Any]:
        """Change the realm's DocNumber uniqueness and/or throttle ``limits`` (``per_minute``, ``per_second``,
        ``concurrent``, ``batch_per_minute``; 0 disables one); the resulting settings."""
        body: dict[str, Any] = {}
        if unique_doc_numbers is not None:
            body["unique_doc_numbers"] = unique_doc_numbers
        if limits is not None:
            body["limits"] = dict(limits)
        return dict(self.call("POST", f"realms/{realm_id}/settings", body))

    # -- the accountant --------------------------------------------------------------------------------------
    def action(self, realm_id: str, action: str, **fields: Any) -> dict[str, Any]:
        """Act as the accountant in QBO's UI (``set_item_price``, ``deactivate``, ``update_customer``, ``update``,
        ``record_payment``, ``delete_payment``, ``void_payment``, ``void_invoice``, ``delete_invoice``); the
        changed object, e.g. ``{"Invoice": {…}}``."""
        return dict(self.call("POST", f"realms/{realm_id}/actions", {"action": action, **fields}))

    # -- counters --------------------------------------------------------------------------------------------
    def counters(self) -> dict[str, Any]:
        """``{"global": {…}, "realms": {realm_id: {"requests": {…}, "requests_total", …}}}`` (zeros absent)."""
        return dict(self.call("GET", "counters"))

    def counter(self, scope: str, name: str) -> int:
        """One count; ``scope`` is a realm id or ``"global"``."""
        report = self.counters()
        section = report["global"] if scope == "global" else report["realms"].get(scope, {})
        return int(section.get(name, 0))

    def reset_counters(self) -> None:
        """Zero every counter."""
        self.call("POST", "counters/reset")

    # -- clock and webhooks ----------------------------------------------------------------------------------
    def advance_clock(self, seconds: float) -> str:
        """Move the sandbox clock (negative to go back); the new envelope time."""
        return str(self.call("POST", "clock", {"advance_seconds": seconds})["now"])

    @contextmanager
    def clock_advanced(self, seconds: float) -> Iterator[None]:
        """Run the block with the sandbox clock moved by ``seconds``, then move it back."""
        self.advance_clock(seconds)
        try:
            yield
        finally:
            self.advance_clock(-seconds)

    def configure_webhooks(
        self,
        url: str | None,
        verifier: str = "",
        format: str = "legacy",
        aggregation_seconds: float = 1.0,
    ) -> dict[str, Any]:
        """Deliver webhooks to ``url`` (None turns them off), signed with ``verifier``, as ``legacy`` or
        ``cloudevents``, gathering events for ``aggregation_seconds`` (scaled) into each notification."""
        payload = {
            "url": url,
            "verifier": verifier,
            "format": format,
            "aggregation_seconds": aggregation_seconds,
        }
        return dict(self.call("POST", "webhooks", payload))

    # -- metered reads ---------------------------------------------------------------------------------------
    def metering(self) -> dict[str, Any]:
        """``{"read_quota", "reads": {app: {month: n}}}``: the app's metered reads per month."""
        return dict(self.call("GET", "metering"))

    def set_read_quota(self, quota: int | None) -> dict[str, Any]:
        """Refuse reads (429) past ``quota`` a month; ``None`` lifts the quota."""
        return dict(self.call("POST", "metering", {"read_quota": quota}))
