"""Bulk writes on SQLite and PostgreSQL alike: insert-or-update (``INSERT … ON CONFLICT DO UPDATE``) and plain
inserts, the same statements on both backends for a few rows; on PostgreSQL a batch of rows travels by ``COPY``
(into a temporary table first when it is an insert-or-update), which costs a fraction of what bound parameters do.
"""

from __future__ import annotations

import io
import operator
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from itertools import islice
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from batchly_pipelines.store.db import dumps_json, json_default
from batchly_pipelines.store.lookup import among

# SQLite allows 32,766 bound variables per statement; PostgreSQL 65,535. Chunks stay well under both.
MAX_BOUND_VALUES = 30_000
_NULL = "\\N"  # COPY's text format for a missing value
# from this many rows on, PostgreSQL gets them by COPY (fewer: the temporary table would cost more than it saves)
COPY_FROM_ROWS = 100
_COPY_READ = 1 << 20


def bulk_insert(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (every one with the same columns): by ``COPY`` on PostgreSQL for a batch, else one
    ``executemany``."""
    if not rows:
        return
    if conn.dialect.name == "postgresql" and len(rows) >= COPY_FROM_ROWS:
        _copy(conn, table, table.name, list(rows[0]), rows)
    else:
        conn.execute(sa.insert(table), list(rows))


def _copy(
    conn: Connection, table: sa.Table, into: str, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]
) -> None:
    """``COPY into (columns) FROM STDIN`` the values of ``rows``, typed as ``table``'s columns, in the caller's
    transaction."""
    defaults = _python_defaults(table, columns)  # what SQLAlchemy would add to an INSERT (COPY adds nothing)
    names = [*columns, *defaults]
    encoders = [_encoder(table.c[name].type) for name in columns]
    tail = "".join(
        "\t" + ("\\N" if value is None else _encoder(table.c[name].type)(value))
        for name, value in defaults.items()
    )
    tail += "\n"
    fetch: Callable[[Mapping[str, Any]], Sequence[Any]] = operator.itemgetter(*columns)
    if len(columns) == 1:  # itemgetter of one key returns the value itself
        fetch = lambda row: (row[columns[0]],)  # noqa: E731
    lines = [
        "\t".join(
            [
                _NULL if value is None else encode(value)
                for value, encode in zip(values, encoders, strict=True)
            ]
        )
        for values in map(fetch, rows)
    ]
    buffer = io.StringIO(tail.join(lines) + tail if lines else "")
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        # read in 1 MB pieces, not psycopg2's 8 kB: fewer calls back into Python (each one waits for the GIL)
        cursor.copy_expert(f"COPY {into} ({', '.join(names)}) FROM STDIN", buffer, size=_COPY_READ)
    finally:
        cursor.close()


def _python_defaults(table: sa.Table, columns: Sequence[str]) -> dict[str, Any]:
    """The client-side defaults (``default=`` of the column, scalar or callable) of ``table``'s columns not in
    ``columns``, worked out once for a batch."""
    defaults: dict[str, Any] = {}
    for column in table.columns:
        default = column.default
        if column.name in columns or default is None or not isinstance(default, sa.ColumnDefault):
            continue
        defaults[column.name] = default.arg(None) if default.is_callable else default.arg
    return defaults


def _encoder(kind: Any) -> Callable[[Any], str]:
    """How a value (never None) of a column of type ``kind`` is written in COPY's text format."""
    if isinstance(kind, sa.JSON):
        return _copy_json
    if isinstance(kind, sa.Boolean):
        return _copy_bool
    if isinstance(kind, sa.DateTime) or isinstance(getattr(kind, "impl", None), sa.DateTime):
        return _remembering(_copy_instant)
    if isinstance(kind, sa.String):
        return _copy_string
    return str


def _remembering(encode: Callable[[Any], str]) -> Callable[[Any], str]:
    """``encode`` that gives the text of the value it encoded last again without encoding it: a batch's rows share
    one ``now`` (``pulled_at``, ``created_at``, ``last_synced_at`` …), one object, whose ``isoformat`` is most of
    what a timestamp costs."""
    last_value: Any = object()
    last_text = ""

    def remembered(value: Any) -> str:
        nonlocal last_value, last_text
        if value is not last_value:
            last_value, last_text = value, encode(value)
        return last_text

    return remembered


def _copy_string(value: Any) -> str:
    """Text: a backslash starts an escape in COPY's text format, a tab ends a field, a newline a row."""
    text = value if type(value) is str else str(value)
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text


# what orjson writes itself but json refuses (json_default refuses them too): left to the default, as with json
_ORJSON_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def _copy_json(value: Any) -> str:
    """JSON (which escapes tabs and newlines itself: only its backslashes need doubling). The text of
    :func:`~batchly_pipelines.store.db.dumps_json` (Decimals by the same rule), written by orjson in a fraction of
    ``json``'s time; what orjson refuses (an unpaired surrogate, an integer beyond 64 bits, a key that is not a
    string) goes to ``dumps_json``."""
    try:
        text = orjson.dumps(value, default=json_default, option=_ORJSON_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        text = dumps_json(value)
    return text.replace("\\", "\\\\")


def _copy_bool(value: Any) -> str:
    return "t" if value else "f"


def _copy_instant(value: Any) -> str:
    if type(value) is datetime and value.tzinfo is not None:  # the usual case, checked first
        return value.isoformat()
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: Batchly stores UTC instants only")
    return value.isoformat() if isinstance(value, datetime) else str(value)


def insert_if_new(
    conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]], *, key: Sequence[str]
) -> bool:
    """PostgreSQL, a batch of rows none of whose ``key`` the table holds (an import's): COPY them straight into
    ``table`` (where rows share a key, the later one) — no temporary table, no ``INSERT … SELECT … ON CONFLICT`` — and
    return True. When the table holds any of them, or a concurrent writer inserts one meanwhile (the unique key
    refuses the COPY, rolled back to its savepoint), or on SQLite or for a few rows: False, nothing written, and
    the caller upserts as usual. ``key`` must be the columns of a unique constraint."""
    if conn.dialect.name != "postgresql" or len(rows) < COPY_FROM_ROWS:
        return False
    latest = list({tuple(row[k] for k in key): row for row in rows}.values())
    *fixed, last = key
    first = latest[0]
    if any(row[k] != first[k] for row in latest for k in fixed):
        return False  # one look by the key's last column: the others must be the same for every row
    c = table.c
    held = conn.execute(
        sa.select(c[last])
        .where(*(c[k] == first[k] for k in fixed), among(conn, c[last], [row[last] for row in latest]))
        .limit(1)
    ).first()
    if held is not None:
        return False
    try:
        with conn.begin_nested():
            _copy(conn, table, table.name, list(first), latest)
    except (
        sa.exc.IntegrityError,
        conn.dialect.loaded_dbapi.IntegrityError,
    ):  # COPY runs on the driver's cursor
        return False
    return True


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
    (PostgreSQL refuses to touch a row twice in one statement; SQLite would keep whichever came last). A batch
    goes to PostgreSQL by COPY into a temporary table and one ``INSERT … SELECT``; otherwise one compiled statement
    runs over chunks of rows, which SQLAlchemy's "insertmanyvalues" sends as multi-row INSERTs.
    """
    iterator = iter(rows)
    first = next(iterator, None)
    if first is None:
        return []
    columns = list(first)
    update_columns = [c for c in (update if update is not None else columns) if c not in key]

    def on_conflict(statement: Any) -> Any:
        if not update_columns:
            return statement.on_conflict_do_nothing(index_elements=list(key))
        return statement.on_conflict_do_update(
            index_elements=list(key),
            set_={c: statement.excluded[c] for c in update_columns},
            where=only_if(statement.excluded) if only_if is not None else None,
        )

    returned = [table.c[k] for k in key]
    chunk_size = max(1, MAX_BOUND_VALUES // len(columns))
    if conn.dialect.name == "postgresql":
        pending = [first, *iterator]
        if len(pending) >= COPY_FROM_ROWS:
            latest = {tuple(row[k] for k in key): row for row in pending}
            staging = _stage(conn, table, columns, list(latest.values()))
            staged = postgresql.insert(table).from_select(list(staging.c.keys()), sa.select(*staging.c))
            written = [tuple(row) for row in conn.execute(on_conflict(staged).returning(*returned)).all()]
            conn.exec_driver_sql(f"DROP TABLE {staging.name}")
            return written
        iterator = iter(pending[1:])
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)
    # RETURNING makes SQLAlchemy batch the rows into multi-row INSERTs on every driver (psycopg2 would otherwise
    # send one statement per row)
    batched = on_conflict(insert).returning(*returned)
    written = []
    chunk: list[Mapping[str, Any]] = [first]
    while chunk:
        chunk.extend(islice(iterator, chunk_size - len(chunk)))
        latest = {tuple(row[k] for k in key): dict(row) for row in chunk}
        written.extend(tuple(row) for row in conn.execute(batched, list(latest.values())).all())
        chunk = list(islice(iterator, chunk_size))
    return written


def _stage(
    conn: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]
) -> Any:
    """PostgreSQL: a temporary table with ``columns`` of ``table`` (dropped at commit at the latest), filled with
    ``rows`` by COPY."""
    name = f"bulk_{uuid.uuid4().hex[:16]}"
    names = [*columns, *_python_defaults(table, columns)]
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE {name} ON COMMIT DROP AS SELECT {', '.join(names)} FROM {table.name} "
        "WITH NO DATA"
    )
    _copy(conn, table, name, columns, rows)
    return sa.table(name, *(sa.column(column) for column in names))
