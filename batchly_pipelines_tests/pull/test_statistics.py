"""An import keeps PostgreSQL's planner statistics of the tables it fills up to date (ANALYZE as they double)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.store.statistics import FIRST_ANALYZE_ROWS, GrowingTables


def test_the_tables_an_import_fills_are_analyzed_as_they_double(engine: Engine) -> None:
    growing = GrowingTables.of_reconcile(engine, "customer")
    on_postgres = engine.dialect.name == "postgresql"
    growing.wrote(FIRST_ANALYZE_ROWS - 1)
    assert growing.analyzed == 0
    growing.wrote(1)
    assert growing.analyzed == int(on_postgres)
    growing.wrote(FIRST_ANALYZE_ROWS - 1)  # not yet doubled
    assert growing.analyzed == int(on_postgres)
    growing.wrote(1)
    assert growing.analyzed == 2 * int(on_postgres)
    if on_postgres:
        with engine.connect() as conn:
            analyzed = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_user_tables WHERE relname IN ('customers', 'qbo_sync_state') "
                    "AND last_analyze IS NOT NULL"
                )
            ).scalar_one()
        assert analyzed == 2
