"""``batchly-sync connect``: the OAuth authorisation-code flow for one organisation, run from this machine.

A short-lived local listener catches the OAuth redirect (one callback on the redirect URI, then it stops); the code
is exchanged and the tokens stored by ``services.connections``. ``make run`` (``cli.cycle``) uses it too.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

import requests

from batchly_pipelines.quickbooks.oauth import AuthorizationCallback
from batchly_pipelines.services.connections import connect_organization
from batchly_pipelines.settings import Settings
from batchly_pipelines.store.connections import ConnectionRecord
from batchly_pipelines.store.db import Engine

PAGE = b"<html><body><h1>Batchly</h1><p>%s</p><p>You can close this tab.</p></body></html>"


class CallbackListener:
    """Listens on the host, port and path of ``redirect_uri`` until one callback arrives (or ``timeout`` passes)."""

    def __init__(self, redirect_uri: str, timeout: float = 300.0) -> None:
        url = urlsplit(redirect_uri)
        if url.hostname is None:
            raise ValueError(f"the redirect URI {redirect_uri!r} has no host")
        self.address = (url.hostname, url.port or (443 if url.scheme == "https" else 80))
        self.path = url.path or "/"
        self.timeout = timeout
        self._received = threading.Event()
        self._callback: AuthorizationCallback | None = None
        self._error = ""
        self._server: HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> CallbackListener:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path.rstrip("/") != listener.path.rstrip("/"):
                    self.send_error(404)
                    return
                params = {key: values[0] for key, values in parse_qs(url.query).items()}
                listener._accept(params)
                message = listener._error or "QuickBooks is connected."
                body = PAGE % message.encode()
                self.send_response(400 if listener._error else 200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the query string carries the authorisation code."""

        self._server = HTTPServer(self.address, Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="oauth-callback", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def wait(self) -> AuthorizationCallback:
        """The callback's parameters; raises TimeoutError, or PermissionError when access was denied."""
        if not self._received.wait(self.timeout):
            raise TimeoutError(f"no authorisation callback on {self.path} within {self.timeout:.0f}s")
        if self._callback is None:
            raise PermissionError(self._error)
        return self._callback

    def _accept(self, params: dict[str, str]) -> None:
        if self._received.is_set():
            return
        if "error" in params:
            self._error = f"authorisation failed: {params['error']}"
        else:
            self._callback = AuthorizationCallback(
                code=params.get("code", ""), realm_id=params.get("realmId", ""), state=params.get("state", "")
            )
        self._received.set()


def authorize(
    engine: Engine,
    settings: Settings,
    organization_id: int,
    *,
    auto_approve: bool,
    timeout: float = 300.0,
    say: Callable[[str], None] = print,
    sandbox_realm_id: str | None = None,
) -> ConnectionRecord:
    """Run the authorisation-code flow for one organisation and store its tokens.

    ``say`` shows the authorisation URL (and progress) to the person; with ``auto_approve`` (the local sandbox
    approves at once) the redirect is followed here, so the flow runs unattended, approving the sandbox company
    ``sandbox_realm_id`` (default: the sandbox's default company).
    """

    def show_and_wait(url: str) -> AuthorizationCallback:
        say(f"authorise Batchly for organisation {organization_id} by opening:\n  {url}")
        if auto_approve:
            say("local mode: the sandbox approves at once; following its redirect to the listener here")
            requests.get(url, params={"realmId": sandbox_realm_id} if sandbox_realm_id else None, timeout=30)
        say(f"waiting up to {timeout:.0f}s for the callback on {settings.qbo_redirect_uri}")
        return listener.wait()

    with CallbackListener(settings.qbo_redirect_uri, timeout=timeout) as listener:
        return connect_organization(
            engine, settings, organization_id, secrets.token_urlsafe(24), show_and_wait
        )
