"""An import keeps PostgreSQL's planner statistics of the tables it fills up to date (ANALYZE as they double)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.services.pull.organization import pull_customers
from batchly_pipelines.store.statistics import FIRST_ANALYZE_ROWS, GrowingTables
from batchly_pipelines_tests.support.pull import Company


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


def test_a_pull_of_thousands_of_rows_leaves_the_mirror_analyzed(company: Company) -> None:
    company.qbo.admin.seed(company.qbo.realm_id, customers=2500, items=0, invoices=0, payments=0, days=30)
    pull_customers(company.engine, company.client, company.org, company.window())
    if (
        company.engine.dialect.name == "postgresql"
    ):  # TRUNCATE between tests leaves reltuples -1: never analyzed
        with company.engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT reltuples FROM pg_class WHERE relname = 'qbo_mirror'")
            ).scalar_one()
        assert rows >= FIRST_ANALYZE_ROWS  # the planner knows the mirror is not empty
