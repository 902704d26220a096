"""Outbox triggers: app writes enqueue in the same transaction; sync writes and sales orders never do."""

from __future__ import annotations

import threading
from datetime import date

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.store import schema as s
from batchly_pipelines.store.db import sync_transaction
from batchly_pipelines_tests.support import factories as f


def test_one_app_write_enqueues_exactly_one_row_in_the_same_transaction(engine: Engine) -> None:
    with engine.begin() as conn:
        org = f.organization(conn)
        customer_id = f.customer(conn, org)
        inside = f.queue_rows(conn)
        assert [(r["entity_type"], r["entity_id"], r["operation"]) for r in inside] == [
            ("customer", customer_id, "insert")
        ]
    with engine.connect() as conn:
        rows = f.queue_rows(conn)
    assert len(rows) == 1
    assert rows[0]["status"] == "pending" and rows[0]["organization_id"] == org
    assert rows[0]["next_attempt_at"].tzinfo is not None


def test_rolled_back_write_enqueues_nothing(engine: Engine) -> None:
    with engine.begin() as conn:
        org = f.organization(conn)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        f.customer(conn, org)
        raise RuntimeError("app failed after writing")
    with engine.connect() as conn:
        assert f.queue_rows(conn) == []
        assert conn.execute(sa.select(sa.func.count()).select_from(s.customers)).scalar() == 0


def test_sync_origin_write_enqueues_nothing(engine: Engine) -> None:
    with engine.begin() as conn:
        org = f.organization(conn)
    with sync_transaction(engine) as conn:
        customer_id = f.customer(conn, org)
        conn.execute(sa.update(s.customers).values(email="pulled@example.com"))
    with engine.connect() as conn:
        assert f.queue_rows(conn) == []
        assert conn.execute(sa.select(s.sync_write_marker)).all() == []
    # the marker does not outlive the sync transaction: the app's next write enqueues again
    with engine.begin() as conn:
        conn.execute(sa.update(s.customers).where(s.customers.c.id == customer_id).values(phone="555 0100"))
        assert [r["entity_id"] for r in f.queue_rows(conn)] == [customer_id]


def test_failed_sync_transaction_leaves_no_marker(engine: Engine) -> None:
    with engine.begin() as conn:
        org = f.organization(conn)
    with pytest.raises(ValueError), sync_transaction(engine) as conn:
        f.customer(conn, org)
        raise ValueError("boom")
    with engine.begin() as conn:
        assert conn.execute(sa.select(s.sync_write_marker)).all() == []
        f.customer(conn, org)
        assert len(f.queue_rows(conn)) == 1


def test_repeated_edits_coalesce_into_one_pending_row(engine: Engine) -> None:
    with engine.begin() as conn:
        org = f.organization(conn)
        customer_id = f.customer(conn, org)
    for n in range(10):
        with engine.begin() as conn:
            conn.execute(
                sa.update(s.customers).where(s.customers.c.id == customer_id).values(notes=f"edit {n}")
            )
    with engine.connect() as conn:
        rows = f.queue_rows(conn)
    assert len(rows) == 1
    assert rows[0]["change_count"] == 11 and rows[0]["operation"] == "insert"


def test_edit_while_a_push_is_in_flight_queues_a_new_row(engine: Engine) -> None:
    with engine.begin() as conn:
        org = f.organization(conn)
        customer_id = f.customer(conn, org)
        conn.execute(sa.update(s.sync_queue).values(status="in_progress"))
        conn.execute(sa.update(s.customers).where(s.customers.c.id == customer_id).values(notes="later edit"))
        rows = f.queue_rows(conn)
    assert [(r["status"], r["operation"]) for r in rows] == [("in_progress", "insert"), ("pending", "update")]


def test_invoice_and_its_lines_make_one_row_and_a_line_edit_requeues_the_invoice(engine: Engine) -> None:
    with engine.begin() as conn:
        org = f.organization(conn)
        cust, item = f.customer(conn, org), f.item(conn, org)
        conn.execute(sa.update(s.sync_queue).values(status="done"))
        invoice_id = f.invoice(conn, org, cust, item, lines=3)
    with engine.connect() as conn:
        pending = [r for r in f.queue_rows(conn) if r["status"] == "pending"]
    assert [(r["entity_type"], r["entity_id"], r["change_count"]) for r in pending] == [
        ("invoice", invoice_id, 4)
    ]

    with engine.begin() as conn:
        conn.execute(sa.update(s.sync_queue).values(status="done"))
        conn.execute(
            sa.update(s.invoice_lines).where(s.invoice_lines.c.line_no == 2).values(description="changed")
        )
        pending = [r for r in f.queue_rows(conn) if r["status"] == "pending"]
    assert [(r["entity_type"], r["entity_id"], r["operation"]) for r in pending] == [
        ("invoice", invoice_id, "update")
    ]


def test_deleting_an_invoice_with_lines_enqueues_nothing_for_the_cascade(engine: Engine) -> None:
    with engine.begin() as conn:
        org = f.organization(conn)
        invoice_id = f.invoice(conn, org, f.customer(conn, org), f.item(conn, org))
        conn.execute(sa.update(s.sync_queue).values(status="done"))
        conn.execute(sa.delete(s.invoices).where(s.invoices.c.id == invoice_id))
        assert [r for r in f.queue_rows(conn) if r["status"] == "pending"] == []


def test_sales_orders_never_enqueue(engine: Engine) -> None:
    with engine.begin() as conn:
        org = f.organization(conn)
        cust, item = f.customer(conn, org), f.item(conn, org)
        conn.execute(sa.update(s.sync_queue).values(status="done"))
        order = conn.execute(
            sa.insert(s.sales_orders).values(
                organization_id=org, customer_id=cust, order_number="SO-1", delivery_date=date(2026, 12, 1)
            )
        ).inserted_primary_key[0]
        conn.execute(
            sa.insert(s.sales_order_lines).values(
                sales_order_id=order, line_no=1, item_id=item, quantity=3, unit_price="5.00"
            )
        )
        conn.execute(sa.update(s.sales_orders).values(status="closed"))
        assert [r for r in f.queue_rows(conn) if r["status"] == "pending"] == []


def test_updates_of_unsynced_columns_do_not_enqueue(engine: Engine) -> None:
    with engine.begin() as conn:
        org = f.organization(conn)
        invoice_id = f.invoice(conn, org, f.customer(conn, org), f.item(conn, org))
        conn.execute(sa.update(s.sync_queue).values(status="done"))
        conn.execute(
            sa.update(s.invoices)
            .where(s.invoices.c.id == invoice_id)
            .values(sales_order_id=None, qbo_id="17")
        )
        assert [r for r in f.queue_rows(conn) if r["status"] == "pending"] == []


@pytest.mark.postgres
def test_app_writes_concurrent_with_a_sync_transaction_still_enqueue(postgres_migrated: Engine) -> None:
    engine = postgres_migrated
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE organizations, sync_queue RESTART IDENTITY CASCADE")
        org = f.organization(conn)
    inside_sync = threading.Event()
    app_done = threading.Event()

    def app_write() -> None:
        inside_sync.wait(5)
        with engine.begin() as conn:
            f.customer(conn, org, display_name="App Customer")
        app_done.set()

    worker = threading.Thread(target=app_write)
    worker.start()
    with sync_transaction(engine) as conn:
        f.customer(conn, org, display_name="Pulled Customer")
        inside_sync.set()
        assert app_done.wait(5), "the app's write must not wait for the sync transaction"
    worker.join()
    with engine.connect() as conn:
        names = conn.execute(
            sa.select(s.customers.c.display_name).join(
                s.sync_queue, s.sync_queue.c.entity_id == s.customers.c.id
            )
        ).scalars()
        assert list(names) == ["App Customer"]
