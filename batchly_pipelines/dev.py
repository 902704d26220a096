"""``batchly-sync dev`` (what ``make dev`` runs): migrate, start the local sandbox, then the Dagster UI."""

from __future__ import annotations

import signal
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from batchly_pipelines.cli_output import section
from batchly_pipelines.local_sandbox import local_sandbox
from batchly_pipelines.settings import Settings
from batchly_pipelines.store import migrate
from batchly_pipelines.store.db import create_engine


def run_dev(settings: Settings, *, port: int = 3000) -> int:
    """Run ``dagster dev`` on the project's workspace until interrupted, with the local sandbox beside it."""
    engine = create_engine(settings.database_url)
    migrate.upgrade(engine)
    section("database", f"{engine.url.render_as_string()} at {migrate.current_revision(engine)}")
    with ExitStack() as stack:
        if settings.is_local:
            sandbox = stack.enter_context(local_sandbox(settings))
            how = "started" if sandbox.started_here else "already running"
            section("quickbooks", f"local sandbox {how} at {sandbox.base_url}")
        else:
            section("quickbooks", f"Intuit {settings.qbo_environment} at {settings.qbo_base_url}")
        section("dagster", f"UI at http://127.0.0.1:{port} (Ctrl-C stops everything)")
        dagster = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("dagster")),
                "dev",
                "-w",
                "workspace.yaml",
                "--port",
                str(port),
            ],
            # a shell that starts us in the background ignores SIGINT; dagster must not inherit that or it could
            # never be stopped (it maps SIGTERM to its SIGINT handler)
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

        def stop(signum: int, frame: FrameType | None) -> None:
            dagster.send_signal(signal.SIGINT)  # dagster dev shuts its webserver and daemon down on SIGINT

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, stop)
        return dagster.wait()
