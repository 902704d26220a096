"""Checklist 7: ``requestid`` replays the original answer without executing again; length limits (6000)."""

from __future__ import annotations

from batchly_pipelines.sandbox.server import SandboxServer
from batchly_pipelines_tests.sandbox.client import Qbo, fault_code


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
