"""QuickBooks time is compressed alike for every entry point: the push lease of ``batchly-sync push`` and of the
Dagster job, and the queue's retry backoff, all follow ``QBO_TIME_SCALE`` (a compressed run must not wait real
minutes for a lease or a retry)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from batchly_pipelines.cli.main import main
from batchly_pipelines.defs.push.job import push_to_quickbooks
from batchly_pipelines.defs.resources import BatchlyDatabase, QuickBooksResource
from batchly_pipelines.services.push.organization import DEFAULT_LEASE, PushStats
from batchly_pipelines.store import push_locks
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.queue import RetryPolicy
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.push import TIME_SCALE, Books, invoice_row, queue_status

# the entry points' time scale in the lease test: 2 QuickBooks minutes = 1 real minute, which a loaded machine cannot
# starve the renewer of (at the sandbox's TIME_SCALE it would be 2 s); the client's scale is not the sandbox's business
# when no request is throttled or retried
ENTRY_TIME_SCALE = 2.0
SCALED_LEASE = DEFAULT_LEASE / ENTRY_TIME_SCALE


@pytest.fixture
def leases(monkeypatch: pytest.MonkeyPatch) -> list[timedelta]:
    """The lease every push asks the realm lock for."""
    asked: list[timedelta] = []
    acquire = push_locks.acquire

    def recording(*args: Any, **kwargs: Any) -> Any:
        asked.append(args[4] if len(args) > 4 else kwargs["lease"])
        return acquire(*args, **kwargs)

    monkeypatch.setattr(push_locks, "acquire", recording)
    return asked


def _invoice(engine: Engine, org: int, doc_number: str) -> int:
    with engine.begin() as conn:
        customer = conn.execute(s.customers.select()).first()
        item = conn.execute(s.items.select()).first()
        return f.invoice(
            conn,
            org,
            customer.id if customer else f.customer(conn, org),
            item.id if item else f.item(conn, org),
            doc_number=doc_number,
        )


def test_the_cli_push_lease_is_scaled_like_the_jobs(
    engine: Engine,
    org: int,
    books: Books,
    environment: None,
    leases: list[timedelta],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QBO_TIME_SCALE", str(ENTRY_TIME_SCALE))
    _invoice(engine, org, "CLI-1")
    assert main(["push", "--org", str(org)]) == 0

    url = engine.url.render_as_string(hide_password=False)
    _invoice(engine, org, "JOB-1")
    result = push_to_quickbooks.execute_in_process(
        run_config={"ops": {"push_records": {"config": {"organization_id": org, "linger_seconds": 0}}}},
        resources={
            "batchly_db": BatchlyDatabase(database_url=url),
            "quickbooks": QuickBooksResource(database_url=url, time_scale=ENTRY_TIME_SCALE),
        },
    )

    assert result.success
    assert sorted(books.by_doc_number()) == ["CLI-1", "JOB-1"]
    assert set(leases) == {SCALED_LEASE}, leases


def test_a_transient_failure_retries_after_a_backoff_in_quickbooks_time(
    engine: Engine, org: int, books: Books, push: Any
) -> None:
    with engine.begin() as conn:
        f.customer(conn, org), f.item(conn, org)
    push()  # its customer and item are in QuickBooks: only the invoice's own chunk fails
    invoice = _invoice(engine, org, "503-1")
    books.faults(error_503=1.0)  # every try of every call, the client's retries included
    try:
        stats: PushStats = push()
    finally:
        books.faults()

    status, error = queue_status(engine, "invoice", invoice)
    assert status == "pending" and error is not None and "503" in error, (status, error)
    assert stats.failed >= 1
    with engine.connect() as conn:
        due = conn.execute(
            s.sync_queue.select().where(
                s.sync_queue.c.entity_type == "invoice", s.sync_queue.c.entity_id == invoice
            )
        ).one()
    waits = due.next_attempt_at - due.updated_at
    # 5 QuickBooks seconds doubling (the same push may have retried it already: the 503s lasted the whole push)
    ceiling = RetryPolicy().base_delay * 2 ** (due.attempts - 1) / TIME_SCALE
    assert timedelta(0) < waits <= ceiling, (waits, due.attempts)
    assert ceiling <= RetryPolicy().base_delay  # never real seconds: at most a sixtieth of 5 s doubling
    assert invoice_row(engine, invoice)["qbo_id"] is None


def test_the_backoff_is_the_documented_one_compressed() -> None:
    policy = RetryPolicy(time_scale=5)
    for attempt in range(1, 9):
        ceiling = min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1)) / 5
        assert ceiling / 2 <= policy.delay(attempt) <= ceiling
