"""The pull's asset checks over a run's many companies are set-based: one statement per check (per thousand records),
not a few per company, and each company's result is the one it had on its own."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.rules.name_lists import CUSTOMERS
from batchly_pipelines.services.connections import client_for_organization
from batchly_pipelines.services.pull import checks
from batchly_pipelines.services.pull.mirror import Window
from batchly_pipelines.services.pull.organization import EPOCH, pull_organization
from batchly_pipelines.settings import Settings
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.scale.conftest import Connect
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxServer

COMPANIES = 4


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements ``engine`` runs inside the block."""
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.startswith("BEGIN"):
            seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)


def _pulled(engine: Engine, connect: Connect, sandbox: SandboxServer) -> list[int]:
    admin = SandboxAdmin(sandbox.base_url)
    settings = Settings.from_env()
    orgs = []
    for n in range(COMPANIES):
        org, realm = connect(f"Checked Company {n}")
        admin.seed(realm, customers=5, items=0, invoices=0, payments=0, days=2, seed=n)
        with client_for_organization(engine, settings, org) as client:
            pull_organization(engine, client, org, Window(EPOCH, utcnow().replace(microsecond=0)))
        orgs.append(org)
    return orgs


def _drift_one_customer(engine: Engine, org: int) -> int:
    """QuickBooks' version of one of the organisation's customers (its mirror row) now differs from Batchly's."""
    m = s.qbo_mirror.c
    with engine.begin() as conn:
        qbo_id, data = conn.execute(
            sa.select(m.qbo_id, m.data)
            .where(m.organization_id == org, m.entity_type == "Customer")
            .order_by(m.qbo_id)
            .limit(1)
        ).one()
        conn.execute(
            sa.update(s.qbo_mirror)
            .where(m.organization_id == org, m.entity_type == "Customer", m.qbo_id == qbo_id)
            .values(data={**data, "CompanyName": "Changed behind our back"})
        )
        return int(
            conn.execute(
                sa.select(s.customers.c.id).where(
                    s.customers.c.organization_id == org, s.customers.c.qbo_id == qbo_id
                )
            ).scalar_one()
        )


def _fewer_statements_than_companies(
    engine: Engine, many: Callable[[list[int]], Mapping[int, checks.CheckOutcome]], orgs: list[int]
) -> dict[int, checks.CheckOutcome]:
    with _statements(engine) as together:
        outcomes = dict(many(orgs))
    with _statements(engine) as alone:
        many(orgs[:1])
    assert len(together) == len(alone), together  # the same statements for four companies as for one
    return outcomes


def test_checks_of_many_companies_run_one_statement_each_with_each_company_s_own_result(
    engine: Engine, connect: Connect, sandbox: SandboxServer
) -> None:
    orgs = _pulled(engine, connect, sandbox)
    drifted = _drift_one_customer(engine, orgs[2])

    drift = _fewer_statements_than_companies(
        engine, lambda ids: checks.records_drift(engine, CUSTOMERS, ids), orgs
    )
    assert {org: (o.checked, o.failed) for org, o in drift.items()} == {
        org: (5, 1 if org == orgs[2] else 0) for org in orgs
    }
    [example] = drift[orgs[2]].examples
    assert example["id"] == drifted and example["fields"] == ["company_name"]
    for org in orgs:  # the one-company answer is the same
        alone = checks.record_drift(engine, CUSTOMERS, org)
        assert (alone.checked, alone.failed, alone.examples) == (
            drift[org].checked,
            drift[org].failed,
            drift[org].examples,
        )

    totals = _fewer_statements_than_companies(engine, lambda ids: checks.invoices_totals(engine, ids), orgs)
    assert {o.checked for o in totals.values()} == {0}
    stored = _fewer_statements_than_companies(
        engine, lambda ids: checks.unstored_by_organization(engine, ids, "Customer"), orgs
    )
    assert all(o.passed and o.checked == 0 for o in stored.values()) and set(stored) == set(orgs)
