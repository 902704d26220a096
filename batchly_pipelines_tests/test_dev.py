"""``make dev`` / ``batchly-sync dev``: the port is the operator's, and the UI starts with ``sync_status`` recorded."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchly_pipelines.cli import dev
from batchly_pipelines.cli.cycle import CycleSummary
from batchly_pipelines.settings import Settings

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_dev_passes_port_to_the_command() -> None:
    plan = subprocess.run(
        ["make", "-n", "dev", "PORT=4321"], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "batchly-sync dev --port 4321" in plan
    default = subprocess.run(
        ["make", "-n", "dev"], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "batchly-sync dev --port 3000" in default


class _Process:
    """A finished process, as far as ``run_dev`` can tell."""

    returncode = 0

    def wait(self) -> int:
        return 0

    def send_signal(self, signum: int) -> None:
        pass


def _run_dev(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, home: str | None
) -> list[tuple[list[str], dict[str, Any]]]:
    calls: list[tuple[list[str], dict[str, Any]]] = []

    @contextlib.contextmanager
    def prepared(settings: Settings) -> Iterator[tuple[None, CycleSummary]]:
        yield None, CycleSummary()

    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append((command, kwargs))
        return subprocess.CompletedProcess(command, 0, "", "")

    def popen(command: list[str], **kwargs: Any) -> _Process:
        calls.append((command, kwargs))
        return _Process()

    monkeypatch.setattr(dev, "prepared", prepared)
    monkeypatch.setattr(dev, "local_receiver", lambda settings: contextlib.nullcontext())  # its own tests
    monkeypatch.setattr(dev.subprocess, "run", run)
    monkeypatch.setattr(dev.subprocess, "Popen", popen)
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    if home is None:
        monkeypatch.delenv("DAGSTER_HOME", raising=False)
    else:
        monkeypatch.setenv("DAGSTER_HOME", home)
    assert dev.run_dev(Settings.from_env({}, cwd=tmp_path), port=4321) == 0
    return calls


def test_dev_records_the_setup_before_the_ui_starts_on_the_chosen_port(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = _run_dev(monkeypatch, tmp_path, str(tmp_path))
    [(setup, _), (ui, _)] = calls
    assert setup == [sys.executable, "-m", "batchly_pipelines.defs.monitoring.startup"]
    assert ui[1:] == ["dev", "-w", str(REPO / "workspace.yaml"), "--port", "4321"]


def test_the_ui_starts_in_dagster_home_without_the_notices_the_project_can_avoid(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    [_, (_, options)] = _run_dev(monkeypatch, tmp_path, str(tmp_path))
    # not beside ./dagster.yaml, which Dagster would say it ignores (make dev copied it into DAGSTER_HOME)
    assert options["cwd"] == str(tmp_path)
    assert "dev_command` is superseded" in options["env"]["PYTHONWARNINGS"]


def test_building_the_code_location_warns_of_nothing() -> None:
    load = "import batchly_pipelines.definitions as d; d.defs.get_repository_def()"  # what a code server does
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", load],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr


def test_without_a_dagster_home_the_sensor_records_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    [(ui, _)] = _run_dev(monkeypatch, tmp_path, None)
    assert ui[1] == "dev"
