"""PostgreSQL (migration 0016): an INSERT into customers or items runs the outbox's and the field-change log's work
once per statement over the rows inserted — an import's thousand records are not a thousand PL/pgSQL calls — and
does what the row triggers did: an app insert enqueues one ``insert`` per record, the sync's own inserts none, an
insert forgets the field changes a former record of its id left; updates still fire per row."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.store import schema as s
from batchly_pipelines.store.db import sync_transaction
from batchly_pipelines_tests.support import factories

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _queue(engine: Engine) -> list[tuple[str, int, str, int]]:
    q = s.sync_queue.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(q.entity_type, q.entity_id, q.operation, q.change_count).order_by(q.id))
        return [tuple(row) for row in rows]


def _many(org: int, start: int, count: int) -> list[dict[str, object]]:
    return [
        {
            "id": n,
            "organization_id": org,
            "display_name": f"C {n}",
            "is_active": True,
            "created_at": NOW,
            "updated_at": NOW,
        }
        for n in range(start, start + count)
    ]


def test_inserts_enqueue_per_record_once_per_statement(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has row triggers only")
    with engine.connect() as conn:
        orientation = dict(
            conn.exec_driver_sql(
                "SELECT trigger_name, action_orientation FROM information_schema.triggers"
                " WHERE event_object_table IN ('customers', 'items') AND event_manipulation = 'INSERT'"
            ).all()
        )
    assert orientation == {
        "customers_outbox_insert": "STATEMENT",
        "customers_field_changes_insert": "STATEMENT",
        "items_outbox_insert": "STATEMENT",
        "items_field_changes_insert": "STATEMENT",
    }
    with engine.begin() as conn:
        org = factories.organization(conn)
        conn.execute(
            sa.insert(s.customers), _many(org, 100, 3)
        )  # the app's insert, three rows in one statement
        conn.execute(
            sa.insert(s.batchly_field_changes),
            [{"entity_type": "customer", "entity_id": 200, "field": "notes", "changed_at": NOW}],
        )
    assert _queue(engine) == [
        ("customer", 100, "insert", 1),
        ("customer", 101, "insert", 1),
        ("customer", 102, "insert", 1),
    ]
    with sync_transaction(engine) as conn:  # the sync's own inserts: nothing to push
        conn.execute(sa.insert(s.customers), _many(org, 200, 2))
    assert len(_queue(engine)) == 3
    with engine.connect() as conn:  # what a former record 200 left is forgotten
        assert conn.execute(sa.select(sa.func.count()).select_from(s.batchly_field_changes)).scalar_one() == 0
    with engine.begin() as conn:  # an app edit of a synced column: per row, as before
        conn.execute(sa.update(s.customers).where(s.customers.c.id.in_([100, 200])).values(notes="edited"))
        conn.execute(
            sa.update(s.customers).where(s.customers.c.id == 101).values(updated_at=NOW)
        )  # no synced column
    assert _queue(engine) == [
        ("customer", 100, "insert", 2),
        ("customer", 101, "insert", 1),
        ("customer", 102, "insert", 1),
        ("customer", 200, "update", 1),
    ]
    with engine.connect() as conn:
        changed = conn.execute(
            sa.select(s.batchly_field_changes.c.entity_id, s.batchly_field_changes.c.field)
        ).all()
    assert sorted(tuple(row) for row in changed) == [(100, "notes"), (200, "notes")]
    with engine.begin() as conn:
        factories.item(conn, org)
    assert _queue(engine)[-1][0::2] == ("item", "insert")
