"""Checklist 7: ``requestid`` replays the original answer without executing again; length limits (6000)."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchly_pipelines_tests.support.sandbox_client import Qbo, fault_code
from qbo_sandbox import state
from qbo_sandbox.server import SandboxConfig, SandboxServer


def test_repeated_requestid_returns_original_body_and_creates_nothing(qbo: Qbo) -> None:
    first = qbo.post("customer", {"DisplayName": "Once"}, requestid="req-1")
    second = qbo.post("customer", {"DisplayName": "Once"}, requestid="req-1")
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert qbo.query("SELECT COUNT(*) FROM Customer")["totalCount"] == 1


def test_replay_of_an_error_keeps_its_status(qbo: Qbo) -> None:
    qbo.customer("Taken")
    first = qbo.post("customer", {"DisplayName": "Taken"}, requestid="req-err")
    second = qbo.post("customer", {"DisplayName": "Different"}, requestid="req-err")
    assert first.status_code == second.status_code == 400
    assert first.content == second.content and fault_code(second) == "6240"
    assert qbo.query("SELECT COUNT(*) FROM Customer WHERE DisplayName = 'Different'")["totalCount"] == 0


def test_requestids_are_per_realm(sandbox: SandboxServer) -> None:
    first, second = Qbo(sandbox), Qbo(sandbox)
    first.customer("A")
    assert first.post("customer", {"DisplayName": "B"}, requestid="shared").status_code == 200
    assert second.post("customer", {"DisplayName": "B"}, requestid="shared").status_code == 200
    assert second.query("SELECT COUNT(*) FROM Customer")["totalCount"] == 1


def test_requestid_length_limits(qbo: Qbo) -> None:
    assert qbo.post("customer", {"DisplayName": "Fifty"}, requestid="x" * 50).status_code == 200
    too_long = qbo.post("customer", {"DisplayName": "Fifty-one"}, requestid="y" * 51)
    assert too_long.status_code == 400 and fault_code(too_long) == "6000"
    batch = {
        "BatchItemRequest": [{"bId": "1", "operation": "create", "Customer": {"DisplayName": "In batch"}}]
    }
    assert qbo.post("batch", batch, requestid="z" * 36).status_code == 200
    assert fault_code(qbo.post("batch", batch, requestid="w" * 37)) == "6000"
    assert qbo.query("SELECT COUNT(*) FROM Customer")["totalCount"] == 2


def test_requestid_answers_survive_a_restart(tmp_path: Path) -> None:
    config = SandboxConfig(throttle=False, state_file=tmp_path / "sandbox.json")
    with SandboxServer(config) as sandbox:
        qbo = Qbo(sandbox)
        created = qbo.post("customer", {"DisplayName": "Kept"}, requestid="persist-ok")
        refused = qbo.post("customer", {"DisplayName": "Kept"}, requestid="persist-err")
        assert created.status_code == 200 and refused.status_code == 400
    with SandboxServer(config) as sandbox:
        qbo = Qbo(sandbox, qbo.realm_id)
        replayed = qbo.post("customer", {"DisplayName": "Kept"}, requestid="persist-ok")
        assert replayed.status_code == 200, "replayed, not executed again (6240)"
        assert replayed.content == created.content
        replayed_error = qbo.post("customer", {"DisplayName": "Other"}, requestid="persist-err")
        assert replayed_error.content == refused.content
        assert qbo.query("SELECT COUNT(*) FROM Customer")["totalCount"] == 1
        assert sandbox.state.counters.report()["realms"][qbo.realm_id]["replays"] == 2


def test_persisted_requestid_answers_stay_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "REPLY_RETENTION", 2)
    config = SandboxConfig(throttle=False, state_file=tmp_path / "sandbox.json")
    with SandboxServer(config) as sandbox:
        qbo = Qbo(sandbox)
        for n in range(3):
            qbo.create("Customer", {"DisplayName": f"Bounded {n}"}, requestid=f"bounded-{n}")
    with SandboxServer(config) as sandbox:
        qbo = Qbo(sandbox, qbo.realm_id)
        assert list(sandbox.state.realms[qbo.realm_id].replies) == ["bounded-1", "bounded-2"]
        forgotten = qbo.post("customer", {"DisplayName": "Bounded 0"}, requestid="bounded-0")
        assert fault_code(forgotten) == "6240", "the oldest answer was forgotten, so it executes again"
        assert qbo.post("customer", {"DisplayName": "Bounded 2"}, requestid="bounded-2").status_code == 200
