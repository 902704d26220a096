"""Engines and transactions for the Batchly database, identical in behaviour on SQLite and PostgreSQL.

``Connection`` and ``Engine`` are re-exported here: the layers above ``store/`` name them in signatures without
importing SQLAlchemy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

from batchly_pipelines.store.schema import sync_write_marker, utcnow

__all__ = [
    "SHORT_TRANSACTION",
    "SQLITE_BUSY_TIMEOUT_MS",
    "Connection",
    "Engine",
    "WriteRefused",
    "bound_transaction",
    "bounded_transaction",
    "create_engine",
    "database_now",
    "dumps_json",
    "normalise_url",
    "savepoint",
    "sync_transaction",
]

SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalise_url(url: str) -> str:
    """Pin PostgreSQL URLs to psycopg2 (SQLAlchemy 2.1 picks psycopg 3 for a bare ``postgresql://``)."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed.render_as_string(hide_password=False)


def json_default(value: Any) -> Any:
    """What JSON columns store for a value ``json`` cannot write: a Decimal (QuickBooks' amounts, parsed exactly) as
    a JSON number, as on the wire — or as a string in the rare case a float would not carry the exact decimal."""
    if isinstance(value, Decimal):
        number = float(value)
        return number if Decimal(repr(number)) == value else str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_JSON = json.JSONEncoder(default=json_default)  # json.dumps would build one per call


def dumps_json(value: Any) -> str:
    """The JSON text of a JSON column's value (see :func:`json_default`); every engine of :func:`create_engine`
    writes its JSON columns with it."""
    return _JSON.encode(value)


# the database dropped the connection or could not be reached: worth asking again (the pool reconnects)
DATABASE_ERRORS: tuple[type[Exception], ...] = (sa.exc.OperationalError, sa.exc.InterfaceError)


class WriteRefused(Exception):
    """The database refused what was written under :func:`savepoint` (a value, a constraint); only that was
    rolled back."""


@contextmanager
def savepoint(conn: Connection) -> Iterator[None]:
    """A savepoint in the caller's transaction: when the database or its driver refuses what is written inside — a
    value its column cannot hold (PostgreSQL refuses a NUL character, a number beyond the column's precision), a
    constraint — only that is rolled back and :class:`WriteRefused` says why, in one line. A dropped connection is
    raised as it is (the whole transaction is lost then)."""
    try:
        with conn.begin_nested():
            yield
    except (sa.exc.DataError, sa.exc.IntegrityError, ValueError) as exc:
        cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
        lines = str(cause).strip().splitlines()
        raise WriteRefused(lines[0] if lines else type(cause).__name__) from exc


def create_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; on SQLite: WAL, foreign keys, a busy timeout and ``BEGIN IMMEDIATE`` transactions.

    ``BEGIN IMMEDIATE`` takes SQLite's write lock at the start of every transaction, so two writers queue behind the
    busy timeout instead of failing on a read-to-write upgrade; it is also what makes queue claims exclusive there.
    """
    url = normalise_url(url)
    kwargs.setdefault("json_serializer", dumps_json)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        return sa.create_engine(url, **kwargs)

    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, **kwargs)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


# a transaction of a few statements with nothing between them (a rate-ledger admission, a lock's release): a session
# idle inside one for longer is frozen (SIGSTOP, a pause) and is ended by PostgreSQL
SHORT_TRANSACTION = timedelta(seconds=5)


def _milliseconds(span: timedelta) -> str:
    return str(max(1, int(span.total_seconds() * 1000)))


def bound_transaction(conn: Connection, *, idle: timedelta, lock_wait: timedelta | None = None) -> None:
    """Bound the caller's transaction on PostgreSQL (``SET LOCAL``, for this transaction only); call it first.

    ``idle``: PostgreSQL ends the session — and rolls the transaction back, releasing its row locks — when it sits
    idle inside the transaction for longer (``idle_in_transaction_session_timeout``), so a process frozen between two
    statements (SIGSTOP, a pause) cannot keep rows that others wait for; when it resumes, its next statement fails
    with a dropped connection (``DATABASE_ERRORS``) and nothing of the transaction is written. ``lock_wait``: a
    statement that waits longer for a row lock fails instead (``lock_timeout``, also one of ``DATABASE_ERRORS``).
    SQLite has neither: there a writing transaction locks the whole file and waits behind the busy timeout.
    """
    if conn.dialect.name != "postgresql":
        return
    settings = [sa.func.set_config("idle_in_transaction_session_timeout", _milliseconds(idle), True)]
    if lock_wait is not None:
        settings.append(sa.func.set_config("lock_timeout", _milliseconds(lock_wait), True))
    conn.execute(sa.select(*settings))


@contextmanager
def bounded_transaction(
    engine: Engine, *, idle: timedelta, lock_wait: timedelta | None = None
) -> Iterator[Connection]:
    """``engine.begin()`` bounded from its first statement (see :func:`bound_transaction`)."""
    with engine.begin() as connection:
        bound_transaction(connection, idle=idle, lock_wait=lock_wait)
        yield connection


@contextmanager
def sync_transaction(
    engine: Engine, *, idle: timedelta | None = None, lock_wait: timedelta | None = None
) -> Iterator[Connection]:
    """A transaction for the sync's own writes to Batchly: they do not enqueue pushes (echo suppression).

    The marker row is inserted first and deleted before commit; on error the rollback removes it. Other transactions
    never see it, so the app's concurrent writes keep enqueueing. ``idle`` (and ``lock_wait``) bound it from its first
    statement (see :func:`bound_transaction`).
    """
    with engine.begin() as connection:
        if idle is not None:
            bound_transaction(connection, idle=idle, lock_wait=lock_wait)
        marker = connection.execute(
            sa.insert(sync_write_marker).values(created_at=utcnow())
        ).inserted_primary_key
        assert marker is not None
        yield connection
        connection.execute(sa.delete(sync_write_marker).where(sync_write_marker.c.id == marker[0]))


def database_now(conn: Connection) -> datetime:
    """The database server's clock (UTC): one clock for every process that compares leases, whatever their own say.

    PostgreSQL answers ``clock_timestamp()``; SQLite lives on this machine, so its clock is the process's.
    """
    if conn.dialect.name == "postgresql":
        moment = conn.execute(sa.select(sa.func.clock_timestamp())).scalar_one()
        return moment.astimezone(UTC)
    return utcnow()
