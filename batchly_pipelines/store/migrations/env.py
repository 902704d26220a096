"""Alembic environment: migrations run on the connection handed over by ``batchly_pipelines.store.migrate``."""

from __future__ import annotations

from alembic import context

from batchly_pipelines.store.db import create_engine
from batchly_pipelines.store.schema import metadata

config = context.config


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # plain `alembic` CLI use
        with create_engine(config.get_main_option("sqlalchemy.url") or "").connect() as conn:
            _run(conn)
    else:
        _run(connection)


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things: batch mode copies tables instead
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
