"""``batchly-sync dev`` (what ``make dev`` runs): the set-up of ``make run`` (sandbox, connections), in local mode the
webhook receiver with the sandbox's webhooks pointed at it, the set-up recorded into ``DAGSTER_HOME`` (company
partitions, a run of each pull job per company, ``sync_status``), then the Dagster UI on the chosen port
(``make dev PORT=3100``).

The UI starts inside ``DAGSTER_HOME`` (not beside ``./dagster.yaml``, which Dagster would announce it ignores:
``make dev`` copied it there) and without the notice that ``dagster dev`` is superseded by ``dg dev``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from types import FrameType

from batchly_pipelines.cli.cycle import prepared
from batchly_pipelines.cli.output import section
from batchly_pipelines.cli.webhooks import local_receiver
from batchly_pipelines.settings import Settings

DAGSTER = str(Path(sys.executable).with_name("dagster"))
WORKSPACE = Path(__file__).resolve().parents[2] / "workspace.yaml"
# `dagster dev` says it is superseded by `dg dev` (the project is not a dg workspace; dagster dev is what it runs)
SUPERSEDED = "ignore:Function `dev_command` is superseded"
STARTUP = "batchly_pipelines.defs.monitoring.startup"  # run, not imported: cli/ and defs/ are separate layers


def run_dev(settings: Settings, *, port: int = 3000) -> int:
    """Run ``dagster dev`` on the project's workspace until interrupted, with the local sandbox beside it."""
    with prepared(settings) as (_, summary), local_receiver(settings) if settings.is_local else nullcontext():
        for error in summary.errors:
            section("error", error)
        home = os.environ.get("DAGSTER_HOME")
        if home:  # Dagster warns that it ignores ./dagster.yaml: `make dev` copied it into DAGSTER_HOME
            section("dagster home", f"{home} (its dagster.yaml is a copy of ./dagster.yaml)")
            record_setup()
        else:
            section("sync_status", "no DAGSTER_HOME: sync_status_sensor records it on its first tick")
        section("dagster", f"UI at http://127.0.0.1:{port} (Ctrl-C stops everything)")
        dagster = subprocess.Popen(
            [
                DAGSTER,
                "dev",
                "-w",
                str(WORKSPACE),
                "--port",
                str(port),
            ],
            cwd=home or None,
            env=quiet_environment(),
            # a shell that starts us in the background ignores SIGINT; dagster must not inherit that or it could
            # never be stopped (it maps SIGTERM to its SIGINT handler)
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

        def stop(signum: int, frame: FrameType | None) -> None:
            dagster.send_signal(signal.SIGINT)  # dagster dev shuts its webserver and daemon down on SIGINT

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, stop)
        return dagster.wait()


def quiet_environment() -> dict[str, str]:
    """This process's environment, with the warning filters of the UI's processes."""
    filters = [f for f in (os.environ.get("PYTHONWARNINGS"), SUPERSEDED) if f]
    return {**os.environ, "PYTHONWARNINGS": ",".join(filters)}


def record_setup() -> None:
    """Record the set-up into ``DAGSTER_HOME`` before the UI starts (``defs.monitoring.startup``: the company
    partitions, a run of each pull job per company, ``sync_status`` with its checks), so the UI opens on the state
    the set-up left instead of "Missing" and "Never materialized"; the sensors keep it current from then on."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", STARTUP],
        env=quiet_environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    for line in done.stdout.strip().splitlines():
        section("recorded", line)
    if done.returncode == 0:
        section("dagster home", f"set-up recorded ({time.monotonic() - started:.1f}s)")
    else:  # the UI still starts; the sensors and schedules catch up
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        section("dagster home", f"set-up not fully recorded (exit {done.returncode}): {last[0]}")
