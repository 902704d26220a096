"""Migrations upgrade from empty, match the declared schema, and downgrade cleanly on both backends."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from batchly_pipelines.store import migrate, outbox
from batchly_pipelines.store.schema import metadata


def _triggers(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
        else:
            query = "SELECT DISTINCT trigger_name FROM information_schema.triggers"
        return set(conn.exec_driver_sql(query).scalars())


def test_upgrade_from_empty_reaches_head_with_tables_and_triggers(empty_engine: Engine) -> None:
    assert migrate.current_revision(empty_engine) is None
    migrate.upgrade(empty_engine)
    assert migrate.current_revision(empty_engine) == migrate.head_revision()
    assert set(metadata.tables) <= set(sa.inspect(empty_engine).get_table_names())
    expected = {"customers_outbox", "items_outbox", "invoices_outbox", "invoice_lines_outbox"}
    expected |= {"customers_field_changes", "items_field_changes"}
    if empty_engine.dialect.name == "sqlite":  # rowids come back after a delete (0014)
        expected |= {"customers_unlinked", "items_unlinked", "invoices_unlinked"}
    else:  # inserts handled once per statement (0016)
        expected |= {
            f"{table}_{kind}_insert"
            for table in ("customers", "items")
            for kind in ("outbox", "field_changes")
        }
    found = {
        name.rsplit("_", 1)[0] if empty_engine.dialect.name == "sqlite" else name
        for name in _triggers(empty_engine)
    }
    assert found == expected


def test_migrated_schema_matches_the_declared_metadata(empty_engine: Engine) -> None:
    migrate.upgrade(empty_engine)
    with empty_engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []


def test_downgrade_to_base_removes_everything_and_upgrade_again_works(empty_engine: Engine) -> None:
    migrate.upgrade(empty_engine)
    migrate.downgrade(empty_engine, "base")
    assert set(sa.inspect(empty_engine).get_table_names()) == {"alembic_version"}
    assert _triggers(empty_engine) == set()
    if empty_engine.dialect.name == "postgresql":
        with empty_engine.connect() as conn:
            functions = conn.execute(
                sa.text(
                    "SELECT proname FROM pg_proc WHERE proname LIKE '%_outbox_fn' OR proname LIKE '%_field_changes_fn'"
                )
            )
            assert functions.all() == []
    migrate.upgrade(empty_engine)
    assert migrate.current_revision(empty_engine) == migrate.head_revision()


def test_every_outbox_source_is_a_declared_table() -> None:
    for source in outbox.SOURCES:
        table = metadata.tables[source.table]
        assert set(source.watched_columns) <= set(table.c.keys()), source.table
