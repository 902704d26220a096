"""Lineage shows Batchly → QuickBooks: the QuickBooks side of pushed customers, items and invoices are assets
downstream of Batchly's tables, materialised by ``push_to_quickbooks`` for what it wrote."""

from __future__ import annotations

from dagster import AssetKey
from sqlalchemy.engine import Engine

from batchly_pipelines.definitions import defs
from batchly_pipelines.defs.push.job import push_to_quickbooks
from batchly_pipelines.defs.resources import BatchlyDatabase, QuickBooksResource
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.push import TIME_SCALE, Books

PUSHED = {entity: AssetKey(["quickbooks", "pushed", entity]) for entity in ("Customer", "Item", "Invoice")}


def test_the_pushed_quickbooks_entities_are_downstream_of_batchlys_tables() -> None:
    graph = defs.resolve_asset_graph()
    parents = {entity: graph.get(key).parent_keys for entity, key in PUSHED.items()}
    assert parents["Customer"] == {AssetKey("batchly_customers")}
    assert parents["Item"] == {AssetKey("batchly_items")}
    assert parents["Invoice"] == {AssetKey(["batchly", "invoices"]), PUSHED["Customer"], PUSHED["Item"]}


def test_a_push_materialises_the_quickbooks_side_of_what_it_wrote(
    engine: Engine, org: int, books: Books, environment: None
) -> None:
    url = engine.url.render_as_string(hide_password=False)
    with engine.begin() as conn:
        customer = f.customer(conn, org)
        item = f.item(conn, org)
        f.invoice(conn, org, customer, item, doc_number="LINEAGE-1")

    result = push_to_quickbooks.execute_in_process(
        run_config={"ops": {"push_records": {"config": {"organization_id": org, "linger_seconds": 0}}}},
        resources={
            "batchly_db": BatchlyDatabase(database_url=url),
            "quickbooks": QuickBooksResource(database_url=url, time_scale=TIME_SCALE),
        },
    )

    assert result.success
    materialized = {m.asset_key: m.metadata for m in result.asset_materializations_for_node("push_records")}
    assert set(materialized) == set(PUSHED.values())
    assert materialized[PUSHED["Invoice"]]["create"].value == 1
    assert materialized[PUSHED["Invoice"]]["organization_id"].value == org
    assert materialized[PUSHED["Customer"]]["create"].value == 1
