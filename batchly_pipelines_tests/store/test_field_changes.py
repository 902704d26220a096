"""The field-change triggers: each column an app write really changed gets the database clock; sync writes don't."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.store import schema as s
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
