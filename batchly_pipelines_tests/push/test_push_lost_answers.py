"""A batch of creates whose answer is lost after QuickBooks wrote it is recovered by a query, not replayed.

The batch budget (40 calls a minute, less for some companies) is the scarce one; reads have their own 500. A replay of
the batch call with the same ``requestid`` costs a batch call and is answered, or lost, with the same odds; the
DocNumber query that finds what QuickBooks already holds costs a read."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.services.push.organization import PushStats
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.queue import RetryPolicy, SyncQueue
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.push import Books


def _requests(books: Books) -> dict[str, int]:
    report = books.sandbox.state.counters.report()["realms"][books.realm_id]
    return {**report["requests"], "replays": report.get("replays", 0)}


def test_a_lost_batch_answer_is_recovered_by_a_query_without_replaying_the_batch(
    engine: Engine, org: int, push: Callable[..., PushStats], books: Books
) -> None:
    with engine.begin() as conn:
        customer = f.customer(conn, org)
        item = f.item(conn, org)
    push()  # the customer and the item, answered
    with engine.begin() as conn:
        invoices = [f.invoice(conn, org, customer, item, doc_number=f"LOST-{n}") for n in range(30)]
    before = _requests(books)
    books.faults(drop_after_write=1.0, seed=3)  # every write lands, every answer to one is lost

    stats = push()

    books.faults()
    after = _requests(books)
    assert after.get("POST batch", 0) - before.get("POST batch", 0) == 1  # the one call, never replayed
    assert after["replays"] == before["replays"]
    found = books.by_doc_number()
    assert sorted(found) == sorted(f"LOST-{n}" for n in range(30))
    assert all(len(copies) == 1 for copies in found.values())
    with engine.connect() as conn:
        linked = dict(
            conn.execute(
                sa.select(s.invoices.c.id, s.invoices.c.qbo_id).where(s.invoices.c.id.in_(invoices))
            ).all()
        )
    assert {linked[i] for i in invoices} == {copies[0]["Id"] for copies in found.values()}
    assert stats.actions["invoice.create"] == 30


def test_a_batch_that_never_reached_quickbooks_is_created_on_the_retry_exactly_once(
    engine: Engine,
    org: int,
    push: Callable[..., PushStats],
    books: Books,
    client: QuickBooksClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with engine.begin() as conn:
        customer = f.customer(conn, org)
        item = f.item(conn, org)
        for n in range(5):
            f.invoice(conn, org, customer, item, doc_number=f"NEVER-{n}")
    request = client.session.request
    refused = 0

    def first_batch_never_arrives(method: str, url: str, **kwargs: Any) -> Any:
        nonlocal refused
        if url.endswith("/batch") and b'"Invoice"' in (kwargs.get("data") or b"") and not refused:
            refused += 1
            raise requests.ConnectionError("connection refused")
        return request(method, url, **kwargs)

    monkeypatch.setattr(client.session, "request", first_batch_never_arrives)
    queue = SyncQueue(engine, RetryPolicy(base_delay=timedelta(0), max_delay=timedelta(0)))

    stats = push(queue=queue)  # the round retries the chunk once the guard found nothing

    assert refused == 1
    assert stats.actions["invoice.create"] == 5
    found = books.by_doc_number()
    assert sorted(found) == sorted(f"NEVER-{n}" for n in range(5))
    assert all(len(copies) == 1 for copies in found.values())
