"""Which fields of an organisation's customers and items go to manual review when both sides changed them.

One setting read by the pull (reconcile) and the push (its 5010 re-merge) alike, so neither settles a field that
waits for a person (``rules.merge.Rule.NEEDS_REVIEW``).
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batchly_pipelines.store.schema import merge_review_fields

c = merge_review_fields.c


def review_fields(conn: Connection, organization_id: int, entity_type: str) -> frozenset[str]:
    """The fields of ``entity_type`` the organisation sends to review."""
    query = sa.select(c.field).where(c.organization_id == organization_id, c.entity_type == entity_type)
    return frozenset(conn.execute(query).scalars())


def add_review_fields(
    conn: Connection, organization_id: int, entity_type: str, fields: Iterable[str]
) -> None:
    """Send these fields to review too (those already listed stay)."""
    wanted = set(fields) - review_fields(conn, organization_id, entity_type)
    if wanted:
        rows = [
            {"organization_id": organization_id, "entity_type": entity_type, "field": f}
            for f in sorted(wanted)
        ]
        conn.execute(sa.insert(merge_review_fields), rows)


def set_review_fields(
    conn: Connection, organization_id: int, entity_type: str, fields: Iterable[str]
) -> None:
    """Replace the organisation's review fields of ``entity_type`` (empty: none)."""
    conn.execute(
        sa.delete(merge_review_fields).where(
            c.organization_id == organization_id, c.entity_type == entity_type
        )
    )
    add_review_fields(conn, organization_id, entity_type, fields)
