"""Cursors, conflicts, bulk upsert, and the money/time types on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.store import schema as s
from batchly_pipelines.store.conflicts import ConflictRecord, list_conflicts, mark_resolved, record_conflicts
from batchly_pipelines.store.cursors import get_cursor, set_cursor
from batchly_pipelines.store.db import sync_transaction
from batchly_pipelines.store.upsert import bulk_upsert
from batchly_pipelines_tests.support import factories as f


def test_cursor_set_get_replace(engine: Engine) -> None:
    with engine.begin() as conn:
        org = f.organization(conn)
        assert get_cursor(conn, org, "customers.pull") is None
        set_cursor(conn, org, "customers.pull", "2026-11-20T10:00:00Z")
        set_cursor(conn, org, "customers.pull", "2026-11-21T10:00:00Z")
        set_cursor(conn, org, "items.pull", "x")
        assert get_cursor(conn, org, "customers.pull") == "2026-11-21T10:00:00Z"
        assert conn.execute(sa.select(sa.func.count()).select_from(s.sync_cursors)).scalar() == 2


def test_conflicts_are_recorded_listed_and_resolved_once(engine: Engine) -> None:
    with engine.begin() as conn:
        org = f.organization(conn)
        customer_id = f.customer(conn, org)
        record_conflicts(
            conn,
            [
                ConflictRecord(
                    org, "customer", customer_id, "58", "email", "a@x", "b@x", "c@x", "pending_review"
                ),
                ConflictRecord(org, "customer", customer_id, "58", "phone", "1", "2", "3", "quickbooks"),
                ConflictRecord(
                    org, "item", None, "9", "unit_price", Decimal("1.10"), Decimal("2.20"), None, "batchly"
                ),
            ],
        )
        open_rows = list_conflicts(conn, organization_id=org)
        assert [(r["field"], r["batchly_value"], r["qbo_value"]) for r in open_rows] == [
            ("email", "b@x", "c@x")
        ]
        assert [r["base_value"] for r in list_conflicts(conn, open_only=False, entity_type="item")] == [
            "1.10"
        ]
        conflict_id = open_rows[0]["id"]
        assert mark_resolved(conn, conflict_id, winner="batchly", resolved_by="ops@batchly.test")
        assert not mark_resolved(conn, conflict_id, winner="quickbooks", resolved_by="someone else")
        [row] = list_conflicts(conn, ids=[conflict_id], open_only=False)
        assert row["resolution"] == "batchly" and row["resolved_by"] == "ops@batchly.test"
        assert row["resolved_at"].tzinfo is UTC
        with pytest.raises(ValueError, match="winner"):
            mark_resolved(conn, conflict_id, winner="pending_review", resolved_by="x")


def test_bulk_upsert_inserts_then_updates_in_chunks(engine: Engine) -> None:
    with engine.begin() as conn:
        org = f.organization(conn)
    now = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
    rows = [
        {
            "organization_id": org,
            "entity_type": "Customer",
            "qbo_id": str(n),
            "sync_token": "0",
            "last_updated_time": now,
            "data": {"Id": str(n), "DisplayName": f"Zoë {n}"},
            "pulled_at": now,
        }
        for n in range(5000)
    ]
    with sync_transaction(engine) as conn:
        assert bulk_upsert(conn, s.qbo_mirror, rows, key=("organization_id", "entity_type", "qbo_id")) == 5000
        changed = [{**r, "sync_token": "1", "data": {**r["data"], "Active": False}} for r in rows[:10]]
        bulk_upsert(conn, s.qbo_mirror, changed, key=("organization_id", "entity_type", "qbo_id"))
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(s.qbo_mirror)).scalar() == 5000
        tokens = conn.execute(
            sa.select(s.qbo_mirror.c.sync_token, sa.func.count()).group_by(s.qbo_mirror.c.sync_token)
        ).all()
        assert dict(tokens) == {"0": 4990, "1": 10}
        data = conn.execute(sa.select(s.qbo_mirror.c.data).where(s.qbo_mirror.c.qbo_id == "3")).scalar()
        assert data == {"Id": "3", "DisplayName": "Zoë 3", "Active": False}


def test_money_is_decimal_and_times_are_utc(engine: Engine) -> None:
    pacific = timezone(timedelta(hours=-8))
    with engine.begin() as conn:
        org = f.organization(conn)
        item_id = f.item(conn, org, unit_price="1234567890.99")
        conn.execute(
            sa.update(s.items)
            .where(s.items.c.id == item_id)
            .values(updated_at=datetime(2026, 11, 20, 16, 0, 1, tzinfo=pacific))
        )
    with engine.connect() as conn:
        price, updated = conn.execute(sa.select(s.items.c.unit_price, s.items.c.updated_at)).one()
    assert price == Decimal("1234567890.99") and isinstance(price, Decimal)
    assert updated == datetime(2026, 11, 21, 0, 0, 1, tzinfo=UTC) and updated.tzinfo is UTC


def test_naive_datetimes_are_refused(engine: Engine) -> None:
    with engine.begin() as conn, pytest.raises(sa.exc.StatementError, match="naive datetime"):
        conn.execute(sa.insert(s.organizations).values(name="x", created_at=datetime(2026, 1, 1)))


def test_bulk_upsert_keeps_the_last_of_rows_sharing_a_key(engine: Engine) -> None:
    with engine.begin() as conn:
        org = f.organization(conn)
    now = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
    row = {
        "organization_id": org,
        "entity_type": "Customer",
        "qbo_id": "7",
        "last_updated_time": now,
        "pulled_at": now,
    }
    versions = [{**row, "sync_token": token, "data": {"SyncToken": token}} for token in ("3", "4")]
    with sync_transaction(engine) as conn:
        assert (
            bulk_upsert(conn, s.qbo_mirror, versions, key=("organization_id", "entity_type", "qbo_id")) == 1
        )
    with engine.connect() as conn:
        assert conn.execute(sa.select(s.qbo_mirror.c.sync_token, s.qbo_mirror.c.data)).all() == [
            ("4", {"SyncToken": "4"})
        ]
