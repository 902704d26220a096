"""Shared fixtures: a migrated Batchly database on SQLite and on a real PostgreSQL.

Each test session creates its own uniquely named PostgreSQL database and drops it afterwards. Under CI
(``CI=true``) PostgreSQL tests never skip: an unreachable server fails the session with a clear message. Elsewhere
they run when ``BATCHLY_TEST_POSTGRES_URL`` is set or PostgreSQL answers on 127.0.0.1:5432, and skip otherwise.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from batchly_pipelines.store import migrate
from batchly_pipelines.store.db import create_engine
from batchly_pipelines.store.schema import metadata

DEFAULT_POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
IN_CI = os.environ.get("CI", "").lower() == "true"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _server_url() -> str | None:
    url = os.environ.get("BATCHLY_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    try:
        probe = create_engine(url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 3})
        with probe.connect():
            pass
        return url
    except sa.exc.OperationalError as exc:
        if IN_CI:
            pytest.exit(
                f"PostgreSQL is required under CI but did not answer at {make_url(url).host}:{make_url(url).port}: "
                f"{exc.orig}. Start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`.",
                returncode=3,
            )
        return None


class PostgresServer:
    """Creates and drops uniquely named databases on one PostgreSQL server."""

    def __init__(self, url: str) -> None:
        self.admin = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        self.url = make_url(url)
        self.created: list[str] = []

    def create_database(self) -> str:
        name = f"batchly_test_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.url.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for name in self.created:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    url = _server_url()
    if url is None:
        pytest.skip("PostgreSQL not reachable (set BATCHLY_TEST_POSTGRES_URL to run these tests)")
    server = PostgresServer(url)
    yield server
    server.drop_all()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating once is much faster)."""
    path = tmp_path_factory.mktemp("template") / "batchly.sqlite"
    engine = create_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()  # the last connection to close checkpoints the WAL into the file
    assert not path.with_name(path.name + "-wal").exists()
    return path


@pytest.fixture(scope="session")
def postgres_migrated(postgres_server: PostgresServer) -> Iterator[Engine]:
    engine = create_engine(postgres_server.create_database())
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty Batchly database on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "batchly.sqlite"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        engine = create_engine(f"sqlite:///{path}")
        yield engine
        engine.dispose()
        return
    engine = request.getfixturevalue("postgres_migrated")
    tables = ", ".join(t.name for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    yield engine


@pytest.fixture(params=BACKENDS)
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A brand-new empty database on each backend (for migration tests)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_server").create_database()
    engine = create_engine(url)
    yield engine
    engine.dispose()
