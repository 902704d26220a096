"""A write whose lease ran out while its request was being built is stopped before its bytes leave.

The write fence answers "you may write until T"; the client checked T once, then built the request, took a pooled
connection (or opened one) and sent it. A process frozen in between (SIGSTOP, a VM pause) or starved there sent the
write when it resumed — after another worker had taken the company over and decided, from QuickBooks' books without
it, to create a correction: a chaos run ended with an original and its correction both open. The client's
connections now check the deadline right before every byte they send.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from batchly_pipelines.quickbooks.client import QuickBooksClient, WriteFenceLost, WriteOp
from batchly_pipelines_tests.support.push import Books
from qbo_sandbox.server import SandboxServer


def _customer(name: str) -> WriteOp:
    return WriteOp(name, "Customer", "create", {"DisplayName": name}, request_id=f"deadline-{name}")


@pytest.mark.parametrize("frozen", [False, True], ids=["in-time", "frozen-past-its-deadline"])
def test_a_write_frozen_between_its_lease_check_and_its_send_never_leaves(
    client: QuickBooksClient,
    sandbox: SandboxServer,
    realm_id: str,
    monkeypatch: pytest.MonkeyPatch,
    frozen: bool,
) -> None:
    client.write_fence = lambda: time.monotonic() + 0.2  # the lease leaves 0.2 s for the write to leave
    request = client.session.request

    def slow_to_build(*args: Any, **kwargs: Any) -> Any:  # after the deadline check, before the bytes leave
        if frozen:
            time.sleep(0.4)
        return request(*args, **kwargs)

    monkeypatch.setattr(client.session, "request", slow_to_build)

    if frozen:
        with pytest.raises(WriteFenceLost, match="nothing was sent"):
            client.write_batch([_customer("Frozen Ltd")])
    else:
        [result] = client.write_batch([_customer("In Time Ltd")])
        assert result.ok, result
    names = sorted(c["DisplayName"] for c in Books(sandbox, realm_id).objects("Customer"))
    assert names == ([] if frozen else ["In Time Ltd"])
