"""Planner statistics of tables a bulk load fills: PostgreSQL plans each statement from the table sizes its last
ANALYZE saw, and autovacuum may come late while an import writes 100,000 rows — an ``IN`` list looked up in a table it
still believes empty is then read by a scan of the whole table, once per batch, and the load grows quadratic."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.store import schema as s
from batchly_pipelines.store.push_rows import TABLES

# text columns up to this length count as narrow (their statistics are cheap to gather)
NARROW_TEXT = 16
# the first ANALYZE after this many rows; then each time the rows written since double
FIRST_ANALYZE_ROWS = 2_000


class GrowingTables:
    """Tables a reconciliation fills: :meth:`wrote` runs ANALYZE on them (PostgreSQL only) once the rows written
    reach :data:`FIRST_ANALYZE_ROWS`, then each time they double — a handful of times for any import, never for a
    small pull."""

    def __init__(self, engine: Engine, tables: Sequence[str]) -> None:
        self.engine, self.tables = engine, list(tables)
        self.written = 0
        self.next = FIRST_ANALYZE_ROWS
        self.analyzed = 0

    @classmethod
    def of_reconcile(cls, engine: Engine, entity_type: str, *, mirror: bool = True) -> GrowingTables:
        """What reconciling ``entity_type`` fills: its Batchly table, the links, the reconciled versions, the log —
        and the mirror it reads, unless ``mirror`` is False (a reconciliation following a running mirror, which
        refreshes its own)."""
        names = [TABLES[entity_type].name, s.qbo_sync_state.name, s.qbo_reconciled.name, s.sync_log.name]
        return cls(engine, [*names, s.qbo_mirror.name] if mirror else names)

    @classmethod
    def of_mirror(cls, engine: Engine) -> GrowingTables:
        """What a pull fills: the mirror (read by the reconciliation and the checks right after)."""
        return cls(engine, [s.qbo_mirror.name])

    def wrote(self, rows: int) -> None:
        """Count ``rows`` more rows written; refresh the statistics when due."""
        self.written += rows
        if self.written < self.next or self.engine.dialect.name != "postgresql":
            return
        with self.engine.begin() as conn:
            conn.exec_driver_sql(f"ANALYZE {', '.join(_keys(name) for name in self.tables)}")
        self.analyzed += 1
        self.next = self.written * 2


def _keys(name: str) -> str:
    """``table (columns)``: the columns of the table's keys and indexes, which the lookups filter and join on, and
    its narrow ones (flags, numbers, times, short codes). The row count is refreshed all the same; the wide columns
    (JSON, long text) — most of ANALYZE's work on a table of QuickBooks objects — are left to autovacuum."""
    table = s.metadata.tables[name]
    columns = [*table.primary_key.columns]
    for index in table.indexes:
        columns.extend(index.columns)
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint):
            columns.extend(constraint.columns)
    columns.extend(column for column in table.columns if _narrow(column.type))
    return f"{name} ({', '.join(dict.fromkeys(column.name for column in columns))})"


def _narrow(kind: sa.types.TypeEngine[object]) -> bool:
    if isinstance(kind, sa.JSON):
        return False
    if isinstance(kind, sa.String):
        return kind.length is not None and kind.length <= NARROW_TEXT
    return True
