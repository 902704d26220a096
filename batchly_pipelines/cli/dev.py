"""``batchly-sync dev`` (what ``make dev`` runs): the set-up of ``make run`` (sandbox, connections), then the Dagster UI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from batchly_pipelines.cli.cycle import prepared
from batchly_pipelines.cli.output import section
from batchly_pipelines.settings import Settings


def run_dev(settings: Settings, *, port: int = 3000) -> int:
    """Run ``dagster dev`` on the project's workspace until interrupted, with the local sandbox beside it."""
    with prepared(settings) as (_, summary):
        for error in summary.errors:
            section("error", error)
        section("dagster", f"UI at http://127.0.0.1:{port} (Ctrl-C stops everything)")
        home = os.environ.get("DAGSTER_HOME")
        if home:  # Dagster warns that it ignores ./dagster.yaml: `make dev` copied it into DAGSTER_HOME
            section("dagster home", f"{home} (its dagster.yaml is a copy of ./dagster.yaml)")
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
