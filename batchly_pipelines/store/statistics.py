"""Planner statistics of tables a bulk load fills: PostgreSQL plans each statement from the table sizes its last
ANALYZE saw, and autovacuum may come late while an import writes 100,000 rows — an ``IN`` list looked up in a table it
still believes empty is then read by a scan of the whole table, once per batch, and the load grows quadratic."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import Engine

from batchly_pipelines.store import schema as s
from batchly_pipelines.store.push_rows import TABLES

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
    def of_reconcile(cls, engine: Engine, entity_type: str) -> GrowingTables:
        """What reconciling ``entity_type`` fills: its Batchly table, the links, the reconciled versions."""
        names = [TABLES[entity_type].name, s.qbo_sync_state.name, s.qbo_reconciled.name, s.sync_log.name]
        return cls(engine, [*names, s.qbo_mirror.name])

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
            conn.exec_driver_sql(f"ANALYZE {', '.join(self.tables)}")
        self.analyzed += 1
        self.next = self.written * 2
