"""Per-organisation sync status: QuickBooks connection and queue depth by state (for the CLI and Dagster)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.store import schema as s
from batchly_pipelines.store.queue import SyncQueue


def organization_status(engine: Engine) -> list[dict[str, Any]]:
    """One row per organisation: id, name, ``quickbooks`` ("realm (status)" or "not connected") and a count per
    queue state."""
    depth = SyncQueue(engine).depth()
    with engine.connect() as conn:
        orgs = conn.execute(sa.select(s.organizations.c.id, s.organizations.c.name).order_by("id")).all()
        connections = {
            row.organization_id: f"{row.realm_id} ({row.status})"
            for row in conn.execute(sa.select(s.qbo_connections))
        }
    return [
        {
            "organization_id": org_id,
            "name": name,
            "quickbooks": connections.get(org_id, "not connected"),
            **{state: depth.get(org_id, {}).get(state, 0) for state in s.QUEUE_STATES},
        }
        for org_id, name in orgs
    ]


def connected_organization_ids(engine: Engine) -> list[int]:
    """Organisations with a QuickBooks connection row (whatever its status), by id."""
    c = s.qbo_connections.c
    with engine.connect() as conn:
        return list(
            conn.execute(sa.select(c.organization_id).distinct().order_by(c.organization_id)).scalars()
        )
