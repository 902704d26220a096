"""Bulk insert-or-update on SQLite and PostgreSQL alike (``INSERT … ON CONFLICT DO UPDATE``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import islice
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

# SQLite allows 32,766 bound variables per statement; PostgreSQL 65,535. Chunks stay well under both.
MAX_BOUND_VALUES = 30_000


def bulk_upsert(
    conn: Connection,
    table: sa.Table,
    rows: Iterable[Mapping[str, Any]],
    *,
    key: Sequence[str],
    update: Sequence[str] | None = None,
    only_if: Callable[[Any], sa.ColumnElement[bool]] | None = None,
) -> int:
    """Insert ``rows``, updating ``update`` columns (default: all but the key) where ``key`` already exists; returns
    the number of rows written (see :func:`upsert_keys`)."""
    return len(upsert_keys(conn, table, rows, key=key, update=update, only_if=only_if))


def upsert_keys(
    conn: Connection,
    table: sa.Table,
    rows: Iterable[Mapping[str, Any]],
    *,
    key: Sequence[str],
    update: Sequence[str] | None = None,
    only_if: Callable[[Any], sa.ColumnElement[bool]] | None = None,
) -> list[tuple[Any, ...]]:
    """Insert ``rows``, updating ``update`` columns (default: all but the key) where ``key`` already exists and, with
    ``only_if``, only where ``only_if(excluded)`` holds for the stored row (``excluded`` is the row offered) — decided
    by the database in the write itself, so two writers racing cannot both win. Returns the keys written.

    Every row must have the same columns. Where rows share a key, the later one wins, on both backends
    (PostgreSQL refuses to touch a row twice in one statement; SQLite would keep whichever came last). One compiled
    statement runs over chunks of rows, which SQLAlchemy's "insertmanyvalues" sends as multi-row INSERTs.
    """
    iterator = iter(rows)
    first = next(iterator, None)
    if first is None:
        return []
    columns = list(first)
    update_columns = [c for c in (update if update is not None else columns) if c not in key]
    chunk_size = max(1, MAX_BOUND_VALUES // len(columns))
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(table)
    if update_columns:
        statement = statement.on_conflict_do_update(
            index_elements=list(key),
            set_={c: statement.excluded[c] for c in update_columns},
            where=only_if(statement.excluded) if only_if is not None else None,
        )
    else:
        statement = statement.on_conflict_do_nothing(index_elements=list(key))
    # RETURNING makes SQLAlchemy batch the rows into multi-row INSERTs on every driver (psycopg2 would otherwise
    # send one statement per row)
    batched = statement.returning(*(table.c[k] for k in key))
    written: list[tuple[Any, ...]] = []
    pending: list[Mapping[str, Any]] = [first]
    while pending:
        pending.extend(islice(iterator, chunk_size - len(pending)))
        latest = {tuple(row[k] for k in key): dict(row) for row in pending}
        written.extend(tuple(row) for row in conn.execute(batched, list(latest.values())).all())
        pending = list(islice(iterator, chunk_size))
    return written
