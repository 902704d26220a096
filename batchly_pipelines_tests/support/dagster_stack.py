"""Dagster really running: ``dagster dev`` (webserver + daemon) on the project's workspace, in its own process group.

Used by the end-to-end test and by the push and chaos benchmarks. ``DAGSTER_HOME`` is a fresh folder holding the
project's ``dagster.yaml`` (run-tag limit per realm, the ``qbo_api`` pool), so sensors start in their default state.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
import requests
from dagster import DagsterEventType, DagsterInstance
from dagster._core.instance.ref import InstanceRef

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 120.0
ACTIVE_STATUSES = frozenset({"QUEUED", "NOT_STARTED", "STARTING", "STARTED"})
# events only a run's own processes log: the run worker its start, each step process its start
RUN_PROCESS_EVENTS = (
    DagsterEventType.RUN_START,
    DagsterEventType.STEP_WORKER_STARTED,
    DagsterEventType.STEP_START,
)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DagsterStack:
    """``dagster dev`` with a temporary home and the given environment; stop it with :meth:`stop` or ``with``."""

    def __init__(self, home: Path, env: dict[str, str], log_file: Path | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.env = {**os.environ, **env, "DAGSTER_HOME": str(home)}
        self.log_file = log_file or home / "dagster-dev.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> DagsterStack:
        """Start and wait until the webserver answers and the code location has loaded."""
        self.home.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "dagster.yaml", self.home / "dagster.yaml")
        command = [
            str(Path(sys.executable).with_name("dagster")),
            "dev",
            "-w",
            "workspace.yaml",
            "--port",
            str(self.port),
        ]
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dagster dev exited early; see {self.log_file}")
            try:
                if self._location_loaded():
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"dagster dev did not become ready in {READY_TIMEOUT_S:.0f}s; see {self.log_file}")

    def _location_loaded(self) -> bool:
        data = self.graphql(
            "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus "
            "locationOrLoadError { __typename } } } } }"
        )
        entries = data["workspaceOrError"].get("locationEntries", [])
        return bool(entries) and all(
            e["loadStatus"] == "LOADED" and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
            for e in entries
        )

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run a GraphQL query against the webserver and return its ``data``."""
        response = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30
        )
        response.raise_for_status()
        payload = response.json()
        if payload.get("errors"):
            raise RuntimeError(f"GraphQL errors: {payload['errors']}")
        return dict(payload["data"])

    def runs(self) -> list[dict[str, Any]]:
        """Every run with its id, status and tags."""
        data = self.graphql("{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }")
        return list(data["runsOrError"]["results"])

    def settled_runs(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        """The runs once none is queued or in progress (a push run lingers briefly for new records)."""
        deadline = time.monotonic() + timeout
        while True:
            runs = self.runs()
            if all(run["status"] not in ACTIVE_STATUSES for run in runs) or time.monotonic() > deadline:
                return runs
            time.sleep(1.0)

    def run_failure(self, run_id: str) -> str | None:
        """Why a run's step failed: the first step failure's error message, and its cause's when it has one (an
        unexpected exception); ``None`` if no step failed."""
        data = self.graphql(
            "query($id: ID!) { runOrError(runId: $id) { ... on Run { eventConnection { events { __typename "
            "... on ExecutionStepFailureEvent { error { message cause { message } } } } } } } }",
            {"id": run_id},
        )
        events = data["runOrError"].get("eventConnection", {}).get("events", [])
        error = next((e["error"] for e in events if e.get("error")), None)
        if error is None:
            return None
        cause = (error.get("cause") or {}).get("message")
        return str(error["message"]).strip() + (f" — caused by {str(cause).strip()}" if cause else "")

    def run_worker_pids(self, run_id: str) -> list[int]:
        """Live processes executing a run: the run worker and its step processes, as the run's own event log names
        them (the process that logged its start and each step's), with their children; only this stack's processes.

        The command lines do not tell: under ``dagster dev`` a run worker is a ``multiprocessing`` child of the code
        server, and so are its steps.
        """
        assert self.process is not None
        with DagsterInstance.from_ref(InstanceRef.from_dir(str(self.home))) as instance:
            logged = {
                entry.dagster_event.pid
                for entry in instance.all_logs(run_id, of_type=set(RUN_PROCESS_EVENTS))
                if entry.dagster_event is not None and entry.dagster_event.pid is not None
            }
        found: dict[int, None] = {}
        for proc in psutil.Process(self.process.pid).children(recursive=True):
            if proc.pid in logged:
                found[proc.pid] = None
                with contextlib.suppress(psutil.Error):
                    found.update(dict.fromkeys(child.pid for child in proc.children(recursive=True)))
        return list(found)

    def signal_run(self, run_id: str, signum: int) -> int:
        """Send ``signum`` to every process of the run (:meth:`run_worker_pids`); how many got it."""
        signalled = 0
        for pid in self.run_worker_pids(run_id):
            try:
                os.kill(pid, signum)
                signalled += 1
            except ProcessLookupError:
                continue
        return signalled

    def mark_run_dead(self, run_id: str) -> None:
        """What an operator does for a run whose process died: terminate it immediately in Dagster.

        The default run launcher cannot see that a run's process is gone, so the run would otherwise stay
        STARTED and keep the realm's run-tag slot.
        """
        self.graphql(
            "mutation($id: String!) { terminateRun(runId: $id, terminatePolicy: MARK_AS_CANCELED_IMMEDIATELY) "
            "{ __typename } }",
            {"id": run_id},
        )

    def stop(self) -> None:
        """Interrupt the whole process group; kill what is left after a grace period."""
        if self.process is None or self.process.poll() is not None:
            return
        group = os.getpgid(self.process.pid)
        os.killpg(group, signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)  # stragglers (run workers) of this group only

    def __enter__(self) -> DagsterStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
