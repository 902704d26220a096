"""Dagster as docs/deployment.md deploys it: a gRPC code server, the webserver and the daemon as three processes (each
in its own process group), Dagster's storage on PostgreSQL (``dagster.yaml`` + ``dagster.postgres.yaml``), the
QueuedRunCoordinator with the project's run-tag and pool limits, run monitoring on.

Used by the deployment test and the night benchmark. :meth:`Deployment.cpu_seconds` is the CPU time of every
process of the deployment — the three servers and each run's processes, which the code server starts — sampled
while it lives.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
import requests

from batchly_pipelines_tests.support.dagster_stack import REPO, free_port

READY_TIMEOUT_S = 120.0
LOCATION = "batchly_pipelines"


def instance_yaml() -> str:
    """The production instance configuration: the project's ``dagster.yaml`` with ``dagster.postgres.yaml``."""
    return (REPO / "dagster.yaml").read_text() + "\n" + (REPO / "dagster.postgres.yaml").read_text()


class Deployment:
    """Code server, webserver and daemon on ``postgres_url`` (Dagster's own database, a psycopg2 URL) with the
    environment ``env``; use with ``with`` or :meth:`start` / :meth:`stop`."""

    def __init__(
        self, home: Path, postgres_url: str, env: dict[str, str], stopped_sensors: tuple[str, ...] = ()
    ) -> None:
        self.home = home
        self.stopped_sensors = stopped_sensors
        self.grpc_port, self.port = free_port(), free_port()
        self.env = {**os.environ, **env, "DAGSTER_HOME": str(home), "DAGSTER_POSTGRES_URL": postgres_url}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _bin(self, name: str) -> str:
        return str(Path(sys.executable).with_name(name))

    def start(self) -> Deployment:
        """Write the instance and workspace files, start the three processes, wait until the location loaded. The
        daemon starts last, after ``stopped_sensors`` were stopped (they never tick)."""
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "dagster.yaml").write_text(instance_yaml())
        workspace = self.home / "workspace.yaml"
        workspace.write_text(
            "load_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
            f"      port: {self.grpc_port}\n      location_name: {LOCATION}\n"
        )
        commands = {
            "code-server": [
                self._bin("dagster"), "code-server", "start", "-m", "batchly_pipelines.definitions",
                "-h", "127.0.0.1", "-p", str(self.grpc_port), "--location-name", LOCATION,
            ],
            "webserver": [
                self._bin("dagster-webserver"), "-w", str(workspace), "-h", "127.0.0.1", "-p", str(self.port),
            ],
            "daemon": [self._bin("dagster-daemon"), "run", "-w", str(workspace)],
        }  # fmt: skip
        daemon = commands.pop("daemon")
        for name, command in commands.items():
            self._spawn(name, command)
        self._sampler.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"{name} exited early; see {self.home / (name + '.log')}")
            with contextlib.suppress(requests.RequestException, RuntimeError, KeyError):
                if self._location_loaded():
                    for sensor in self.stopped_sensors:
                        stop = [self._bin("dagster"), "sensor", "stop", sensor, "-w", str(workspace)]
                        subprocess.run(stop, cwd=REPO, env=self.env, check=True, capture_output=True)
                    self._spawn("daemon", daemon)
                    return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the deployment did not become ready in {READY_TIMEOUT_S:.0f}s; see {self.home}")

    def _spawn(self, name: str, command: list[str]) -> None:
        with (self.home / f"{name}.log").open("wb") as log:
            self.processes[name] = subprocess.Popen(
                command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _location_loaded(self) -> bool:
        data = self.graphql(
            "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus "
            "locationOrLoadError { __typename } } } } }"
        )
        entries = data["workspaceOrError"]["locationEntries"]
        return bool(entries) and all(
            e["loadStatus"] == "LOADED" and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
            for e in entries
        )

    def graphql(
        self, query: str, variables: dict[str, Any] | None = None, timeout: float = 60
    ) -> dict[str, Any]:
        """Run a GraphQL query against the webserver and return its ``data``."""
        response = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=timeout
        )
        response.raise_for_status()
        payload = response.json()
        if payload.get("errors"):
            raise RuntimeError(f"GraphQL errors: {payload['errors']}")
        return dict(payload["data"])

    def pids(self) -> dict[str, int]:
        """The three servers' process ids."""
        return {name: process.pid for name, process in self.processes.items()}

    def _tree(self) -> list[psutil.Process]:
        found: list[psutil.Process] = []
        for process in list(self.processes.values()):  # the daemon may be added meanwhile
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(process.pid)
                found.append(root)
                found.extend(root.children(recursive=True))
        return found

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            for process in self._tree():
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    self._cpu[process.pid] = times.user + times.system

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by every process of the deployment (each last seen at most 0.5 s ago)."""
        return sum(self._cpu.values())

    def server_cpu_seconds(self) -> float:
        """The part of :meth:`cpu_seconds` used by the three servers themselves (the rest: runs, code server
        children)."""
        roots = set(self.pids().values())
        return sum(cpu for pid, cpu in self._cpu.items() if pid in roots)

    def stop(self) -> None:
        """Interrupt each process group; kill what is left after a grace period."""
        self._stop.set()
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(os.getpgid(process.pid), signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(os.getpgid(process.pid), signal.SIGKILL)
                process.wait(timeout=10)
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # stragglers (run workers) of this group only

    def __enter__(self) -> Deployment:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
