"""Helpers shared by the QuickBooks tests and their child processes (kept light: no pytest, no sandbox server)."""

from __future__ import annotations

from qbo_sandbox.admin_client import SandboxAdmin

TIME_SCALE = 60.0


class SandboxTokens:
    """Tokens minted by the sandbox's admin API (the client's TokenSource where token handling is not under test)."""

    def __init__(self, base_url: str, realm_id: str) -> None:
        self.admin = SandboxAdmin(base_url)
        self.realm_id = realm_id
        self.token = self._mint()

    def _mint(self) -> str:
        return self.admin.access_token(self.realm_id)

    def access_token(self) -> str:
        return self.token

    def refresh(self, rejected_access_token: str) -> str:
        self.token = self._mint()
        return self.token
