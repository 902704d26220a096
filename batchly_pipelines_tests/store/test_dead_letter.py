"""The dead letter: a dead row closes itself once a later row of its record syncs; listings name record and reason."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.store import schema as s
from batchly_pipelines.store.queue import SyncQueue
from batchly_pipelines.store.status import dead_letter, organization_status
from batchly_pipelines_tests.support import factories as f

LEASE = timedelta(minutes=5)


def _dead_customer(engine: Engine, queue: SyncQueue) -> tuple[int, int]:
    """An organisation with one customer whose only queue row is dead; returns (organisation, customer)."""
    with engine.begin() as conn:
        org = f.organization(conn)
        customer_id = f.customer(conn, org, display_name="Bad: name")
    [item] = queue.claim("w", limit=1, lease=LEASE)
    assert queue.fail(item, f"customer {customer_id} display_name: contains ':'", retryable=False) == "dead"
    return org, customer_id


def _edit(engine: Engine, customer_id: int, **values: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(s.customers).where(s.customers.c.id == customer_id).values(**values))


def test_a_dead_row_is_closed_as_superseded_when_a_later_row_of_its_record_is_acknowledged(
    engine: Engine,
) -> None:
    queue = SyncQueue(engine)
    org, customer_id = _dead_customer(engine, queue)
    with engine.begin() as conn:
        other = f.customer(conn, org, display_name="Other: bad")
    [other_item] = queue.claim("w", limit=1, lease=LEASE)
    queue.fail(other_item, "other is bad too", retryable=False)
    _edit(engine, customer_id, display_name="Fixed name")  # the app fixes it: a new pending row
    [fixed] = queue.claim("w", limit=1, lease=LEASE)
    assert fixed.entity_id == customer_id

    with engine.begin() as conn:
        assert SyncQueue.ack(conn, [fixed]) == 1

    with engine.connect() as conn:
        rows = {(r["entity_id"], r["id"]): r for r in f.queue_rows(conn)}
    first = rows[(customer_id, min(i for e, i in rows if e == customer_id))]
    assert first["status"] == "done" and first["completed_at"] is not None
    assert first["last_error"] == (
        f"superseded by queue row {fixed.id}, which synced; last error: customer {customer_id} display_name: "
        "contains ':'"
    )
    assert [r["entity_id"] for r in queue.list(status="dead")] == [other]  # another record's stays
    assert queue.depth()[org]["dead"] == 1
    [status] = organization_status(engine)
    assert status["dead"] == 1


def test_an_acknowledgement_without_the_lease_closes_nothing(engine: Engine) -> None:
    queue = SyncQueue(engine)
    _, customer_id = _dead_customer(engine, queue)
    _edit(engine, customer_id, display_name="Fixed name")
    [stale] = queue.claim("w", limit=1, lease=LEASE)
    queue.claim("other", limit=1, lease=LEASE, now=stale.lease_expires_at + timedelta(seconds=1))

    with engine.begin() as conn:
        assert SyncQueue.ack(conn, [stale]) == 0

    assert [r["entity_id"] for r in queue.list(status="dead")] == [customer_id]


def test_dead_letter_names_each_record_and_its_reason(engine: Engine) -> None:
    queue = SyncQueue(engine)
    org, customer_id = _dead_customer(engine, queue)
    with engine.begin() as conn:
        item_id = f.item(conn, org, name="Gadget")
        invoice_id = f.invoice(conn, org, customer_id, item_id, doc_number="INV-7", lines=0)
    for claimed in queue.claim("w", limit=10, lease=LEASE, entity_types=["invoice"]):
        queue.fail(
            claimed, f"invoice {invoice_id} lines: an invoice needs at least one line", retryable=False
        )

    rows = dead_letter(engine)

    assert [(r["entity_type"], r["entity_id"], r["name"], r["organization"]) for r in rows] == [
        ("customer", customer_id, "Bad: name", "Acme Ltd"),
        ("invoice", invoice_id, "INV-7", "Acme Ltd"),
    ]
    assert rows[1]["last_error"] == f"invoice {invoice_id} lines: an invoice needs at least one line"
    assert rows[1]["attempts"] == 0 and rows[1]["dead_since"] is not None
    assert [r["entity_id"] for r in dead_letter(engine, ids=[rows[1]["id"]])] == [invoice_id]
    assert dead_letter(engine, organization_id=org + 1) == []
