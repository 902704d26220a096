"""The field-change triggers: each column an app write really changed gets the database clock; sync writes don't."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.store import schema as s
from batchly_pipelines.store.conflicts import ConflictRecord, list_conflicts, record_conflicts
from batchly_pipelines.store.db import sync_transaction
from batchly_pipelines.store.field_changes import field_change_times
from batchly_pipelines_tests.support import factories as f


def _times(engine: Engine, entity_type: str, table: sa.Table, row_id: int) -> dict:
    with engine.connect() as conn:
        row = conn.execute(sa.select(table).where(table.c.id == row_id)).mappings().one()
        return field_change_times(conn, entity_type, [row])[row_id]


def test_an_app_update_records_only_the_columns_it_changed(engine: Engine) -> None:
    with engine.begin() as conn:
        org = f.organization(conn)
        customer = f.customer(conn, org, phone="555", notes="a")
    created = _times(engine, "customer", s.customers, customer)
    assert len(set(created.values())) == 1  # every field: created_at
    time.sleep(0.02)
    with engine.begin() as conn:  # phone set to what it already was, notes really changed
        conn.execute(
            sa.update(s.customers).where(s.customers.c.id == customer).values(phone="555", notes="b")
        )
    after = _times(engine, "customer", s.customers, customer)
    assert after["phone"] == created["phone"]
    assert after["notes"] > created["notes"]
    time.sleep(0.02)
    with engine.begin() as conn:
        conn.execute(sa.update(s.customers).where(s.customers.c.id == customer).values(phone=None))
    cleared = _times(engine, "customer", s.customers, customer)
    assert cleared["phone"] > after["notes"] and cleared["notes"] == after["notes"]


def test_sync_writes_are_not_batchly_changes(engine: Engine) -> None:
    with engine.begin() as conn:
        org = f.organization(conn)
        item = f.item(conn, org, description="d")
    before = _times(engine, "item", s.items, item)
    time.sleep(0.02)
    with sync_transaction(engine) as conn:
        conn.execute(sa.update(s.items).where(s.items.c.id == item).values(description="from QuickBooks"))
    assert _times(engine, "item", s.items, item) == before


@pytest.mark.parametrize("column", ["unit_price", "is_active", "name", "sku"])
def test_every_synced_item_column_is_tracked(engine: Engine, column: str) -> None:
    values = {"unit_price": "99.00", "is_active": False, "name": "Other", "sku": "S-9"}
    with engine.begin() as conn:
        org = f.organization(conn)
        item = f.item(conn, org)
    before = _times(engine, "item", s.items, item)
    time.sleep(0.02)
    with engine.begin() as conn:
        conn.execute(sa.update(s.items).where(s.items.c.id == item).values({column: values[column]}))
    after = _times(engine, "item", s.items, item)
    assert [name for name in after if after[name] != before[name]] == [column]


def _review(
    conn: sa.Connection, org: int, entity_type: str, entity_id: int, field: str, value: object
) -> None:
    record_conflicts(
        conn,
        [ConflictRecord(org, entity_type, entity_id, "1", field, "base", value, "theirs", "pending_review")],
    )


def test_an_app_edit_shows_in_the_records_open_reviews_at_once(engine: Engine) -> None:
    with engine.begin() as conn:
        org = f.organization(conn)
        customer = f.customer(conn, org, notes="ours")
        item = f.item(conn, org, unit_price="10.00")
        _review(conn, org, "customer", customer, "notes", "ours")
        _review(conn, org, "item", item, "unit_price", "10.00")
        _review(conn, org, "item", item, "is_active", True)
    with engine.begin() as conn:
        conn.execute(sa.update(s.customers).where(s.customers.c.id == customer).values(notes="ours, later"))
        conn.execute(
            sa.update(s.items).where(s.items.c.id == item).values(unit_price=Decimal("12.5"), is_active=False)
        )
    with sync_transaction(engine) as conn:  # the sync's own writes are no Batchly edits
        conn.execute(sa.update(s.customers).where(s.customers.c.id == customer).values(phone="1"))
    with engine.connect() as conn:
        rows = list_conflicts(conn, open_only=False)
    shown = {(r["field"], json.dumps(r["batchly_value"]), r["revision"]) for r in rows}
    assert shown == {("notes", '"ours, later"', 2), ("unit_price", '"12.50"', 2), ("is_active", "false", 2)}
    with engine.begin() as conn:  # seen again by a merge with the same values: the same revision
        _review(conn, org, "customer", customer, "notes", "ours, later")
        conn.execute(sa.update(s.customers).where(s.customers.c.id == customer).values(notes="ours, later"))
    with engine.connect() as conn:
        [notes] = list_conflicts(conn, field="notes")
    assert notes["revision"] == 2
