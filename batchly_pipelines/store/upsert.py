"""Bulk insert-or-update on SQLite and PostgreSQL alike (``INSERT … ON CONFLICT DO UPDATE``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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
) -> int:
    """Insert ``rows``, updating ``update`` columns (default: all but the key) where ``key`` already exists.

    Every row must have the same columns. Where rows share a key, the later one wins, on both backends
    (PostgreSQL refuses to touch a row twice in one statement; SQLite would keep whichever came last). One compiled
    statement runs over chunks of rows, which SQLAlchemy's "insertmanyvalues" sends as multi-row INSERTs. Returns
    the number of rows written.
    """
    iterator = iter(rows)
    first = next(iterator, None)
    if first is None:
        return 0
    columns = list(first)
    update_columns = [c for c in (update if update is not None else columns) if c not in key]
    chunk_size = max(1, MAX_BOUND_VALUES // len(columns))
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(table)
    if update_columns:
        statement = statement.on_conflict_do_update(
            index_elements=list(key), set_={c: statement.excluded[c] for c in update_columns}
        )
    else:
        statement = statement.on_conflict_do_nothing(index_elements=list(key))
    # RETURNING makes SQLAlchemy batch the rows into multi-row INSERTs on every driver (psycopg2 would otherwise
    # send one statement per row)
    batched = statement.returning(*(table.c[k] for k in key))
    written = 0
    pending: list[Mapping[str, Any]] = [first]
    while pending:
        pending.extend(islice(iterator, chunk_size - len(pending)))
        latest = {tuple(row[k] for k in key): dict(row) for row in pending}
        conn.execute(batched, list(latest.values())).all()
        written += len(latest)
        pending = list(islice(iterator, chunk_size))
    return written
