"""Serving the receiver with uvicorn: in the foreground (``batchly-sync webhooks serve``) or in a thread (tests)."""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import uvicorn
from starlette.types import ASGIApp

from batchly_pipelines.services.webhooks.receiver import PATH

BACKLOG = 2048
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ReceiverServer:
    """uvicorn on a socket bound and listening from construction: ``port=0`` picks a free port, :attr:`url` is known at
    once, and deliveries that arrive before uvicorn accepts wait in the backlog.

    SIGINT and SIGTERM stop it gracefully when it runs in the main thread: in-flight deliveries are answered first.
    """

    def __init__(
        self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "info"
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.socket.listen(BACKLOG)  # connections queue from now on, before uvicorn accepts them
        self.host, self.port = host, int(self.socket.getsockname()[1])
        config = uvicorn.Config(
            app,
            log_level=log_level,
            lifespan="off",
            server_header=False,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=10,
            backlog=BACKLOG,
        )
        self.ready = threading.Event()
        self._server = _Server(config, self.ready)

    @property
    def url(self) -> str:
        """Where Intuit delivers."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{PATH}"

    def serve(self) -> None:
        """Serve until stopped: :meth:`stop`, or SIGINT / SIGTERM in the main thread, after which it returns
        normally (uvicorn re-raises the signal it handled; here that lands on a handler that ignores it)."""
        main = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.signal(sig, _stopped) for sig in STOP_SIGNALS} if main else {}
        try:
            self._server.run(sockets=[self.socket])
        finally:
            self.socket.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def stop(self) -> None:
        """Ask the server to finish in-flight requests and stop."""
        self._server.should_exit = True

    @contextmanager
    def running(self, timeout: float = 10.0) -> Iterator[ReceiverServer]:
        """Serve in a background thread for the duration of the block."""
        thread = threading.Thread(target=self.serve, name="webhook-receiver", daemon=True)
        thread.start()
        if not self.ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"the webhook receiver did not start within {timeout} s")
        try:
            yield self
        finally:
            self.stop()
            thread.join(timeout)


class _Server(uvicorn.Server):
    """uvicorn's server, telling when it accepts connections."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self._ready.set()


def _stopped(signum: int, frame: FrameType | None) -> None:
    """The stop signal, once uvicorn has shut down gracefully: nothing more to do."""
