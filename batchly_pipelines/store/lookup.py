"""Looking up a batch of keys at once: ``column IN (…)`` for a thousand values, written the cheap way per backend."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection


def among(conn: Connection, column: Any, values: Iterable[Any]) -> sa.ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL as ``column = ANY(array)``: one parameter instead of one per value,
    which SQLAlchemy and the driver handle in a fraction of the time for a batch of a thousand (the planner reads
    both the same way: an index scan of the values)."""
    values = list(values)
    if conn.dialect.name == "postgresql":
        return column == sa.any_(sa.bindparam(None, values, type_=postgresql.ARRAY(column.type)))
    return column.in_(values)
