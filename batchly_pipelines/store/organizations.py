"""Batchly organisations and which of them are connected to QuickBooks (for the CLI, the cycle and the sensors).

See also :mod:`batchly_pipelines.store.status` (connection and queue depth per organisation).
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchly_pipelines.store import schema as s

org = s.organizations.c
conn_c = s.qbo_connections.c


def count_organizations(engine: Engine) -> int:
    """How many organisations the database holds."""
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(s.organizations)).scalar_one()


def organization_name(engine: Engine, organization_id: int) -> str | None:
    """The organisation's name (``None`` when there is no such organisation)."""
    with engine.connect() as conn:
        return conn.execute(sa.select(org.name).where(org.id == organization_id)).scalar()


def organization_timezone(conn: Connection, organization_id: int) -> str:
    """The organisation's IANA time zone name, read in the caller's connection."""
    return conn.execute(sa.select(org.timezone).where(org.id == organization_id)).scalar_one()


def organization_timezones(engine: Engine, organization_ids: Iterable[int]) -> dict[int, str]:
    """The IANA time zone name of each of ``organization_ids`` (those that exist), in one statement."""
    ids = sorted(set(organization_ids))
    if not ids:
        return {}
    with engine.connect() as conn:
        return {
            org_id: zone
            for org_id, zone in conn.execute(sa.select(org.id, org.timezone).where(org.id.in_(ids)))
        }


def unconnected_organizations(engine: Engine) -> tuple[int, list[tuple[int, str]]]:
    """How many QuickBooks connection rows exist (whatever their status), and the organisations without one as
    ``(id, name)`` by id — read in one connection, closed on return (on SQLite an open read holds the write lock)."""
    connected = sa.select(conn_c.organization_id)
    with engine.connect() as conn:
        already = conn.execute(sa.select(sa.func.count()).select_from(s.qbo_connections)).scalar_one()
        missing = conn.execute(
            sa.select(org.id, org.name).where(org.id.not_in(connected)).order_by("id")
        ).all()
    return already, [(organization_id, name) for organization_id, name in missing]


def connected_organizations(engine: Engine) -> list[tuple[int, str]]:
    """Organisations whose QuickBooks connection is ``connected``, as ``(id, name)`` by id."""
    with engine.connect() as conn:
        return [
            (row.id, row.name)
            for row in conn.execute(
                sa.select(org.id, org.name)
                .join(s.qbo_connections, conn_c.organization_id == org.id)
                .where(conn_c.status == "connected")
                .order_by(org.id)
            )
        ]


def connected_realms(engine: Engine, organization_ids: Iterable[int]) -> dict[int, str]:
    """The QuickBooks realm of each of ``organization_ids`` whose connection is ``connected``."""
    with engine.connect() as conn:
        return {
            organization_id: realm_id
            for organization_id, realm_id in conn.execute(
                sa.select(conn_c.organization_id, conn_c.realm_id)
                .where(conn_c.organization_id.in_(list(organization_ids)), conn_c.status == "connected")
                .order_by(conn_c.id)
            )
        }


def organizations_with_connection(engine: Engine) -> list[tuple[int, str]]:
    """Organisations with a QuickBooks connection row (whatever its status), as ``(id, name)`` by id."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(org.id, org.name).where(org.id.in_(sa.select(conn_c.organization_id))).order_by(org.id)
        ).all()
    return [(organization_id, name) for organization_id, name in rows]
