"""The full reconciliation's writes: a value taken from QuickBooks never overwrites a Batchly edit it did not read,
and a push is queued through the outbox like an app edit."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.store import schema as s
from batchly_pipelines.store.db import sync_transaction
from batchly_pipelines.store.reconciliation import queue_pushes, take_values
from batchly_pipelines_tests.support import factories


def _customer(engine: Engine) -> tuple[int, int]:
    with sync_transaction(engine) as conn:  # as the pull leaves a linked customer: nothing queued
        org = factories.organization(conn)
        customer = factories.customer(conn, org, "Ada", phone="555-0100", qbo_id="7")
        conn.execute(
            sa.insert(s.qbo_sync_state).values(
                organization_id=org,
                entity_type="customer",
                entity_id=customer,
                qbo_id="7",
                sync_token="0",
                base={},
            )
        )
    return org, customer


def _phone_and_base(engine: Engine, customer: int) -> tuple[str, dict[str, object]]:
    with engine.connect() as conn:
        phone = conn.execute(sa.select(s.customers.c.phone).where(s.customers.c.id == customer)).scalar_one()
        base = conn.execute(sa.select(s.qbo_sync_state.c.base)).scalar_one()
    return phone, base


def test_a_value_is_taken_only_while_the_row_still_holds_what_was_read(engine: Engine) -> None:
    _, customer = _customer(engine)
    with sync_transaction(engine) as conn:  # the app changed the phone after the comparison read 555-0100
        conn.execute(sa.update(s.customers).where(s.customers.c.id == customer).values(phone="555-0150"))
    with sync_transaction(engine) as conn:
        taken = take_values(
            conn, "customer", customer, {"phone": "555-0199"}, {"phone": "555-0100"}, {"phone": "x"}
        )
    assert taken is False
    assert _phone_and_base(engine, customer) == ("555-0150", {})

    with sync_transaction(engine) as conn:
        taken = take_values(
            conn, "customer", customer, {"phone": "555-0199"}, {"phone": "555-0150"}, {"phone": "555-0199"}
        )
    assert taken is True
    assert _phone_and_base(engine, customer) == ("555-0199", {"phone": "555-0199"})
    with engine.connect() as conn:
        assert factories.queue_rows(conn) == []  # a sync write: not pushed back


def test_queue_pushes_goes_through_the_outbox_like_an_app_edit(engine: Engine) -> None:
    org, customer = _customer(engine)
    with engine.begin() as conn:
        assert queue_pushes(conn, "customer", [customer]) == 1
    with engine.connect() as conn:
        [row] = factories.queue_rows(conn)
    assert (row["organization_id"], row["entity_type"], row["entity_id"], row["status"]) == (
        org,
        "customer",
        customer,
        "pending",
    )
