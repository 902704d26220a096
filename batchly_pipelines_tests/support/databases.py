"""Throw-away Batchly databases for benchmarks, and dropping their connections the way a database outage does."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.store.db import create_engine


@contextmanager
def fresh_database_url(server_url: str, folder: Path, *, keep: bool = False) -> Iterator[str]:
    """The URL of a fresh, empty database: a new PostgreSQL database on ``server_url`` (dropped afterwards unless
    ``keep``), or a SQLite file in ``folder`` when ``server_url`` is ``sqlite``."""
    if server_url == "sqlite":
        yield f"sqlite:///{folder / 'batchly.sqlite'}"
        return
    admin_engine = create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    name = f"batchly_bench_{uuid.uuid4().hex[:10]}"
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin_engine.url.set(database=name).render_as_string(hide_password=False)
    finally:
        if not keep:
            with admin_engine.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin_engine.dispose()


def drop_connections(engine: Engine) -> int:
    """Terminate every other session on ``engine``'s PostgreSQL database (``pg_terminate_backend``), as a failover
    or a restarted server does to its clients; how many were dropped. SQLite has no sessions to drop: 0."""
    if engine.dialect.name != "postgresql":
        return 0
    with engine.connect() as conn:
        dropped = conn.execute(
            sa.text(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    return int(dropped)
