"""The HTTP server: ``SandboxServer(SandboxConfig(...))`` serves the data API, OAuth and the admin API on one port.

Standard-library ``ThreadingHTTPServer`` with HTTP/1.1 keep-alive; usable in-process (``with SandboxServer(cfg) as
sb``) or from the ``qbo-sandbox`` CLI.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qsl, urlsplit

from qbo_sandbox.admin import PREFIX, AdminApi
from qbo_sandbox.api import DataApi
from qbo_sandbox.clock import Clock
from qbo_sandbox.metering import ReadMeter
from qbo_sandbox.oauth import JWKS_PATH, USERINFO_PATH, OAuthServer
from qbo_sandbox.seed import (
    DEMO_COMPANY_NAME,
    DEMO_PLAN,
    DEMO_REALM_ID,
    Seeder,
    create_company,
    open_company,
)
from qbo_sandbox.state import SandboxState
from qbo_sandbox.throttle import Throttle
from qbo_sandbox.webhooks import AGGREGATION_SECONDS, WebhookConfig, WebhookDispatcher
from qbo_sandbox.wire import Request, Response, dumps, json_response, system_fault

logger = logging.getLogger(__name__)

SAVE_INTERVAL = 1.0


@dataclass
class SandboxConfig:
    """Everything a sandbox needs; ``port=0`` picks a free port."""

    host: str = "127.0.0.1"
    port: int = 0
    time_scale: float = 1.0
    latency_ms: float = 0.0
    throttle: bool = True
    client_id: str = "batchly-local-client"
    client_secret: str = "batchly-local-secret"
    state_file: str | Path | None = None
    seed_demo: bool = False
    refresh_grace_seconds: float = 0.0
    webhook_url: str | None = None
    webhook_verifier: str = ""
    webhook_format: str = "legacy"
    webhook_aggregation_seconds: float = AGGREGATION_SECONDS
    read_quota: int | None = None  # the app's metered reads per month (None: counted, never refused)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], sandbox: SandboxServer) -> None:
        self.sandbox = sandbox
        super().__init__(address, _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up are routine (timeouts, dropped-connection faults); log anything else."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        logger.exception("error serving %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    wbufsize = 1 << 16  # headers and body leave in one send (flushed by handle_one_request)
    server: _HTTPServer

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        request = Request(
            self.command, url.path, dict(parse_qsl(url.query, keep_blank_values=True)), headers, body
        )
        try:
            response = self.server.sandbox.handle(request)
        except Exception:
            logger.exception("sandbox error on %s %s", self.command, self.path)
            response = Response(500, dumps({"Fault": system_fault().fault()}))
        if response.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        tid = secrets.token_hex(16)
        self.send_header("intuit_tid", f"1-{tid[:8]}-{tid[8:]}")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("%s - " + format, self.address_string(), *args)


class SandboxServer:
    """A local QuickBooks Online: start with ``start()`` or as a context manager, stop with ``stop()``."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.clock = Clock(self.config.time_scale)
        path = Path(self.config.state_file) if self.config.state_file else None
        self.state = SandboxState(path)
        self.oauth = OAuthServer(
            self.state,
            self.clock,
            self.config.client_id,
            self.config.client_secret,
            self.config.refresh_grace_seconds,
            lambda realm_id: open_company(self.state, self.clock, realm_id),
        )
        self.throttle = Throttle(self.clock, self.config.throttle)
        webhook_config = WebhookConfig(
            self.config.webhook_url,
            self.config.webhook_verifier,
            self.config.webhook_format,
            self.config.webhook_aggregation_seconds,
        )
        self.webhooks = WebhookDispatcher(self.clock, self.state.counters, webhook_config)
        self.state.listeners.append(self.webhooks.on_event)
        self.meter = ReadMeter(self.clock, self.config.read_quota)
        self.api = DataApi(
            self.state, self.clock, self.oauth, self.throttle, self.config.latency_ms, meter=self.meter
        )
        self.admin = AdminApi(self.state, self.clock, self.oauth, self.webhooks, meter=self.meter)
        self._httpd: _HTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        if self.config.seed_demo and self.state.realm(DEMO_REALM_ID) is None:
            self.seed_demo()

    def seed_demo(self) -> None:
        """Create the demo company (realm 9341453050298760) with realistic data."""
        realm = create_company(self.state, self.clock, DEMO_REALM_ID, DEMO_COMPANY_NAME)
        self.state.default_realm_id = realm.realm_id
        Seeder(realm, self.clock, DEMO_PLAN).run()

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._httpd is None:
            raise RuntimeError("the sandbox is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> SandboxServer:
        """Bind and serve from background threads."""
        httpd = self._httpd = _HTTPServer((self.config.host, self.config.port), self)
        self._spawn(lambda: httpd.serve_forever(poll_interval=0.05), "qbo-sandbox-http")
        if self.state.path is not None:
            self._spawn(self._autosave, "qbo-sandbox-save")
        self.webhooks.start()
        return self

    def stop(self) -> None:
        """Stop serving, stop webhooks, save the state file."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        self.webhooks.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        self.state.save()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def handle(self, request: Request) -> Response:
        """Route one request to the data API, OAuth, discovery or the admin API."""
        path = request.path
        if path.startswith("/v3/company/"):
            realm_id, _, rest = path[len("/v3/company/") :].partition("/")
            return self.api.handle(request, realm_id, rest.strip("/").split("/"))
        if path.startswith(PREFIX):
            return self.admin.handle(request)
        route = (request.method, path.rstrip("/"))
        if route == ("GET", "/connect/oauth2"):
            return self.oauth.authorize(request)
        if route == ("POST", "/oauth2/v1/tokens/bearer"):
            return self.oauth.token(request, self.base_url)
        if route == ("POST", "/oauth2/v1/tokens/revoke"):
            return self.oauth.revoke(request)
        if route in (
            ("GET", "/.well-known/openid_configuration"),
            ("GET", "/.well-known/openid_sandbox_configuration"),
        ):  # Intuit's discovery URLs end with a slash, which rstrip drops
            return self.oauth.discovery(self.base_url)
        if route == ("GET", JWKS_PATH):
            return self.oauth.jwks()
        if route in (("GET", USERINFO_PATH), ("POST", USERINFO_PATH)):
            return self.oauth.userinfo(request)
        return json_response(404, {"error": f"no route for {request.method} {path}"})

    def _spawn(self, target: Callable[[], object], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _autosave(self) -> None:
        while not self._stopping.wait(SAVE_INTERVAL):
            if self.state.dirty:
                self.state.save()
