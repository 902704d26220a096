"""When each synced field of a customer or item last changed in Batchly, recorded by database triggers.

Newest-wins is decided per field (``rules.merge``): a field changed on both sides goes to the side that changed *that
field* later, not the side whose record was updated later. The app edits rows directly, so the time of each field's
change is taken where the edit happens: triggers on ``customers`` and ``items`` record, for every column an update
really changed (``IS DISTINCT FROM``), the database clock in ``batchly_field_changes`` — in the app's own
transaction, on SQLite and PostgreSQL alike. The sync's own writes (inside ``sync_transaction``) are not changes
Batchly made and are not recorded. A field never changed since its record was inserted changed at ``created_at``;
inserting a record forgets any rows a former record of that id left.

The same app write shows in the record's open reviews at once: each ``pending_review`` conflict of a field it
changed takes the new Batchly value (JSON as ``store.conflicts`` writes it: money as a decimal string) as its next
``revision``, so a reviewer always sees what Batchly holds now (QuickBooks' side is refreshed by every merge that
reads it) and a decision made on an older revision is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batchly_pipelines.rules.mapping import MAPPINGS
from batchly_pipelines.store.outbox import CUSTOMER_COLUMNS, ITEM_COLUMNS
from batchly_pipelines.store.schema import batchly_field_changes

TRACKED: Mapping[str, tuple[str, str, tuple[str, ...]]] = {
    # entity type → (table, trigger name, columns)
    "customer": ("customers", "customers_field_changes", CUSTOMER_COLUMNS),
    "item": ("items", "items_field_changes", ITEM_COLUMNS),
}
# each column's value as the JSON ``store.conflicts`` stores (text, money as a decimal string, flag), per dialect
_AS_JSON = {
    "sqlite": {
        "text": "json_quote(NEW.{col})",
        "money": "json_quote(printf('%.2f', NEW.{col}))",
        "flag": "CASE WHEN NEW.{col} THEN 'true' ELSE 'false' END",
    },
    "postgresql": {
        "text": "to_json(NEW.{col})",
        "money": "to_json(NEW.{col}::text)",
        "flag": "to_json(NEW.{col})",
    },
}

_SKIP_SYNC_WRITES = "NOT EXISTS (SELECT 1 FROM sync_write_marker)"
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"


def _record_sql(
    entity_type: str, columns: tuple[str, ...], *, distinct: str, now: str, names: tuple[str, str, str]
) -> str:
    changed = ", ".join(f"('{col}', OLD.{col} {distinct} NEW.{col})" for col in columns)
    return (
        "INSERT INTO batchly_field_changes (entity_type, entity_id, field, changed_at)\n"
        f"        SELECT '{entity_type}', NEW.id, f.{names[0]}, {now} FROM (VALUES {changed}) AS f{names[1]}\n"
        f"        WHERE f.{names[2]}\n"
        "        ON CONFLICT (entity_type, entity_id, field) DO UPDATE SET changed_at = excluded.changed_at"
    )


def _refresh_reviews_sql(entity_type: str, columns: tuple[str, ...], dialect: str, distinct: str) -> str:
    kinds = {spec.column: spec.kind for spec in MAPPINGS[entity_type].specs}
    values = " ".join(f"WHEN '{col}' THEN {_AS_JSON[dialect][kinds[col]].format(col=col)}" for col in columns)
    changed = " ".join(f"WHEN '{col}' THEN OLD.{col} {distinct} NEW.{col}" for col in columns)
    return (
        f"UPDATE sync_conflicts SET batchly_value = CASE field {values} END, revision = revision + 1\n"
        f"        WHERE entity_type = '{entity_type}' AND entity_id = NEW.id AND resolution = 'pending_review'"
        f" AND CASE field {changed} ELSE false END"
    )


def _forget_sql(entity_type: str) -> str:
    return f"DELETE FROM batchly_field_changes WHERE entity_type = '{entity_type}' AND entity_id = NEW.id"


def create_statements(dialect: str) -> list[str]:
    """DDL that installs the field-change triggers on ``dialect`` ('sqlite' or 'postgresql')."""
    statements: list[str] = []
    for entity_type, (table, name, columns) in TRACKED.items():
        if dialect == "sqlite":
            record = _record_sql(
                entity_type, columns, distinct="IS NOT", now=_SQLITE_NOW, names=("column1", "", "column2")
            )
            refresh = _refresh_reviews_sql(entity_type, columns, dialect, "IS NOT")
            statements += [
                f"CREATE TRIGGER {name}_update AFTER UPDATE OF {', '.join(columns)} ON {table} FOR EACH ROW "
                f"WHEN {_SKIP_SYNC_WRITES}\nBEGIN\n    {record};\n    {refresh};\nEND",
                f"CREATE TRIGGER {name}_insert AFTER INSERT ON {table} FOR EACH ROW\n"
                f"BEGIN\n    {_forget_sql(entity_type)};\nEND",
            ]
        elif dialect == "postgresql":
            record = _record_sql(
                entity_type,
                columns,
                distinct="IS DISTINCT FROM",
                now="now()",
                names=("name", "(name, changed)", "changed"),
            )
            refresh = _refresh_reviews_sql(entity_type, columns, dialect, "IS DISTINCT FROM")
            statements += [
                f"CREATE FUNCTION {name}_fn() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
                f"    IF TG_OP = 'INSERT' THEN\n        {_forget_sql(entity_type)};\n"
                f"    ELSIF {_SKIP_SYNC_WRITES} THEN\n        {record};\n        {refresh};\n    END IF;\n"
                "    RETURN NULL;\nEND\n$$",
                f"CREATE TRIGGER {name} AFTER INSERT OR UPDATE OF {', '.join(columns)} ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {name}_fn()",
            ]
        else:
            raise ValueError(f"field-change triggers are not available for the {dialect!r} dialect")
    return statements


def drop_statements(dialect: str) -> list[str]:
    """DDL that removes what :func:`create_statements` installed."""
    statements: list[str] = []
    for table, name, _ in TRACKED.values():
        if dialect == "sqlite":
            statements += [f"DROP TRIGGER IF EXISTS {name}_update", f"DROP TRIGGER IF EXISTS {name}_insert"]
        else:
            statements += [
                f"DROP TRIGGER IF EXISTS {name} ON {table}",
                f"DROP FUNCTION IF EXISTS {name}_fn()",
            ]
    return statements


def field_change_times(
    conn: Connection, entity_type: str, rows: Iterable[Mapping[str, Any]]
) -> dict[int, dict[str, datetime]]:
    """When each synced field of these Batchly rows (with ``id`` and ``created_at``) last changed in Batchly:
    the recorded change, else the row's ``created_at``."""
    rows = list(rows)
    columns = TRACKED[entity_type][2]
    times = {row["id"]: dict.fromkeys(columns, row["created_at"]) for row in rows}
    if not times:
        return times
    c = batchly_field_changes.c
    query = sa.select(c.entity_id, c.field, c.changed_at).where(
        c.entity_type == entity_type, c.entity_id.in_(sorted(times))
    )
    for entity_id, name, changed_at in conn.execute(query):
        if name in times[entity_id]:
            times[entity_id][name] = changed_at
    return times
