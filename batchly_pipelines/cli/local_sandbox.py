"""The local QuickBooks sandbox as a companion process for ``make run`` and ``make dev`` (local mode only).

If something already answers at ``QBO_BASE_URL`` (say, a sandbox left running by ``make dev``) it is used as is;
otherwise ``qbo-sandbox serve`` is started with the demo company, its state persisted under ``.batchly/`` so the demo
company survives restarts, and stopped again when the block ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import requests

from batchly_pipelines.settings import Settings

READY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class LocalSandbox:
    """Where the sandbox answers, and whether this process started it."""

    base_url: str
    started_here: bool
    log_file: Path | None


def answers(base_url: str) -> bool:
    """True when a QuickBooks sandbox answers at ``base_url``."""
    try:
        return requests.get(f"{base_url}/.well-known/openid_configuration", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@contextmanager
def local_sandbox(settings: Settings) -> Iterator[LocalSandbox]:
    """Make sure the local sandbox answers at ``settings.qbo_base_url`` for the duration of the block."""
    if not settings.is_local:
        raise ValueError("the local sandbox is only used when QBO_ENVIRONMENT=local")
    if answers(settings.qbo_base_url):
        yield LocalSandbox(settings.qbo_base_url, started_here=False, log_file=None)
        return
    url = urlparse(settings.qbo_base_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_file = settings.data_dir / "qbo-sandbox.log"
    command = [
        str(Path(sys.executable).with_name("qbo-sandbox")),
        "serve",
        "--host", url.hostname or "127.0.0.1",
        "--port", str(url.port or 80),
        "--seed-demo",
        "--state", str(settings.data_dir / "sandbox-state.json"),
        "--client-id", settings.qbo_client_id,
        "--client-secret", settings.qbo_client_secret,
    ]  # fmt: skip
    with log_file.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not answers(settings.qbo_base_url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the local QuickBooks sandbox did not start at {settings.qbo_base_url} "
                    f"(exit code {process.poll()}); see {log_file}"
                )
            time.sleep(0.1)
        yield LocalSandbox(settings.qbo_base_url, started_here=True, log_file=log_file)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
