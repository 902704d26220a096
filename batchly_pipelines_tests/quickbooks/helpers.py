"""Helpers shared by the QuickBooks tests and their child processes (kept light: no pytest, no sandbox imports)."""

from __future__ import annotations

from typing import Any

import requests

TIME_SCALE = 60.0


def admin(base_url: str, path: str, body: dict[str, Any] | None = None, method: str = "POST") -> Any:
    """Call the sandbox's admin API and return its JSON answer (asserting success)."""
    response = requests.request(method, f"{base_url}/__sandbox__/{path}", json=body or {}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def counter(base_url: str, scope: str, name: str) -> int:
    """One sandbox counter (``scope`` is a realm id or ``global``)."""
    report = admin(base_url, "counters", method="GET")
    section = report["global"] if scope == "global" else report["realms"].get(scope, {})
    return int(section.get(name, 0))


class SandboxTokens:
    """Tokens minted by the sandbox's admin API (the client's TokenSource where token handling is not under test)."""

    def __init__(self, base_url: str, realm_id: str) -> None:
        self.base_url = base_url
        self.realm_id = realm_id
        self.token = self._mint()

    def _mint(self) -> str:
        return str(admin(self.base_url, f"realms/{self.realm_id}/tokens")["access_token"])

    def access_token(self) -> str:
        return self.token

    def refresh(self, rejected_access_token: str) -> str:
        self.token = self._mint()
        return self.token
