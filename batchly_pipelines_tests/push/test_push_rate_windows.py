"""The push's batch calls count against the company's windows from their send (plus the arrival bound), not from a
late answer.

QuickBooks counts a request when it arrives. A limiter that starts a request's window only when the answer is read
loses the server's processing time of every call in every window — up to a second for a batch under load, a tenth of a
call per window and chain — and a worker frozen with answers unread (SIGSTOP) put its old calls back into the windows
when it resumed. The client marks the send right before the request leaves, after the push's write fence held —
never before it: a write the fence refused after a freeze was never sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.quickbooks.ratelimit import SharedRateLimiter
from batchly_pipelines.services.push import organization as push_module
from batchly_pipelines.services.push.organization import PushAbandoned, PushStats
from batchly_pipelines.store import schema as s
from batchly_pipelines_tests.support import factories as f

SLOW_ANSWER = 0.3  # seconds each batch answer takes to be read


def test_batch_calls_count_from_their_send_not_their_answer(
    engine: Engine,
    org: int,
    client: QuickBooksClient,
    push: Callable[..., PushStats],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with engine.begin() as conn:
        customer = f.customer(conn, org)
        item = f.item(conn, org)
        for number in range(3):
            f.invoice(conn, org, customer, item, doc_number=f"WIN-{number}")
    calls: list[tuple[float, float]] = []  # (request started, answer read) of every batch call
    request = client.session.request

    def slow(method: str, url: str, **options: Any) -> Any:
        started = time.time()
        response = request(method, url, **options)
        if url.endswith("/batch"):
            time.sleep(SLOW_ANSWER)
            calls.append((started, time.time()))
        return response

    monkeypatch.setattr(client.session, "request", slow)
    limiter = client.limiter
    assert isinstance(limiter, SharedRateLimiter)
    limiter.limits = replace(limiter.limits, arrival_bound_seconds=0.05)  # the sandbox is next door
    stored: list[tuple[bool, float]] = []  # (batch call?, its time in the windows) as the ledger keeps it
    finish = limiter.ledger.finish

    def finished(request_id: int, sent_at: float | None = None) -> None:
        finish(request_id, sent_at)
        r = s.qbo_rate_requests.c
        with engine.connect() as conn:
            row = conn.execute(sa.select(r.is_batch, r.sent_at).where(r.id == request_id)).one()
        stored.append((bool(row.is_batch), float(row.sent_at)))

    monkeypatch.setattr(limiter.ledger, "finish", finished)

    stats = push()

    assert stats.actions == {"customer.create": 1, "item.create": 1, "invoice.create": 3}
    batch_times = [at for batch, at in stored if batch]
    assert len(batch_times) == len(calls) == 3  # customer, item, invoices: one after the other
    for at, (started, answered) in zip(batch_times, sorted(calls), strict=True):
        # marked by the write fence right before the request left: counted from then plus the arrival bound
        assert at <= started + 0.05 < answered - SLOW_ANSWER + 0.1


def test_a_write_whose_lease_check_answered_before_a_freeze_is_not_counted_when_the_process_resumes(
    engine: Engine,
    org: int,
    client: QuickBooksClient,
    push: Callable[..., PushStats],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker frozen (SIGSTOP) while its write's lease check was answering: on resume the check hands back a
    deadline that passed during the freeze, so the write is refused and never leaves. It must not count as a batch
    call sent the moment the process resumed: in the chaos benchmark such phantoms made the
    limiter believe the company had served 23 batch calls of its 20, and the 429s that followed halved the limit."""
    with engine.begin() as conn:
        f.customer(conn, org)
    start = push_module._Push.__init__
    freeze = 0.3

    def frozen_writes(self: Any, *args: Any, **kwargs: Any) -> None:
        start(self, *args, **kwargs)
        fence = self.client.write_fence  # the push's check before every write

        def frozen() -> float:
            fence()
            time.sleep(freeze)  # frozen with the answer read: the deadline ran out meanwhile
            return time.monotonic() - freeze / 2

        self.client.write_fence = frozen

    monkeypatch.setattr(push_module._Push, "__init__", frozen_writes)
    with pytest.raises(PushAbandoned):
        push()
    r = s.qbo_rate_requests.c
    with engine.connect() as conn:
        batch_calls = conn.execute(sa.select(r.admitted_at, r.sent_at).where(r.is_batch)).all()
    assert batch_calls == []  # never sent: it takes no place in the company's windows
