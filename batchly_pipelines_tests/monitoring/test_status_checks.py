"""The checks of ``sync_status`` name the records behind every problem and clear once it is gone."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from dagster import AssetCheckSeverity, DagsterInstance, DagsterRun, materialize
from sqlalchemy.engine import Engine

from batchly_pipelines.definitions import defs
from batchly_pipelines.defs.monitoring.assets import sync_status
from batchly_pipelines.defs.monitoring.checks import (
    connections_healthy,
    dead_letter_empty,
    no_open_conflicts,
    queue_not_waiting,
)
from batchly_pipelines.defs.resources import BatchlyDatabase
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.queue import SyncQueue
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.support import factories as f

LEASE = timedelta(minutes=1)
CHECKS = [dead_letter_empty, no_open_conflicts, connections_healthy, queue_not_waiting]


def _evaluate(engine: Engine, instance: DagsterInstance | None = None) -> dict[str, Any]:
    database = BatchlyDatabase(database_url=engine.url.render_as_string(hide_password=False))
    result = materialize([sync_status, *CHECKS], resources={"batchly_db": database}, instance=instance)
    assert result.success
    return {check.check_name: check for check in result.get_asset_check_evaluations()}


def _rows(check: Any, key: str) -> list[dict[str, Any]]:
    return [dict(record.data) for record in check.metadata[key].value.records]


def _connect(
    engine: Engine,
    organization_id: int,
    status: str = "connected",
    reason: str | None = None,
    hard_expiry_in: timedelta | None = None,
) -> None:
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            sa.insert(s.qbo_connections).values(
                organization_id=organization_id,
                realm_id=f"realm-{organization_id}",
                environment="local",
                base_url="http://127.0.0.1:1",
                status=status,
                status_reason=reason,
                refresh_token_hard_expires_at=now + hard_expiry_in if hard_expiry_in is not None else None,
                created_at=now,
                updated_at=now,
            )
        )


def test_everything_passes_on_a_healthy_quiet_database(engine: Engine) -> None:
    with engine.begin() as conn:
        org = f.organization(conn)
    _connect(engine, org)
    checks = _evaluate(engine)
    assert sorted(checks) == sorted(key.name for c in CHECKS for key in c.check_keys)
    assert all(check.passed for check in checks.values())


def test_dead_letter_fails_as_an_error_naming_each_record_and_why_and_clears_once_it_synced(
    engine: Engine,
) -> None:
    with engine.begin() as conn:
        org = f.organization(conn, "Acme Ltd")
        customer = f.customer(conn, org)
        item = f.item(conn, org)
    queue = SyncQueue(engine)
    for claimed in queue.claim("w", limit=10, lease=LEASE):
        with engine.begin() as conn:
            SyncQueue.ack(conn, [claimed])
    with engine.begin() as conn:
        bad = [f.invoice(conn, org, customer, item, doc_number=f"BAD-{n}", lines=0) for n in (1, 2)]
    for claimed in queue.claim("w", limit=10, lease=LEASE):
        queue.fail(
            claimed, f"invoice {claimed.entity_id} lines: an invoice needs at least one line", retryable=False
        )

    check = _evaluate(engine)["dead_letter_empty"]

    assert not check.passed and check.severity == AssetCheckSeverity.ERROR
    assert check.metadata["dead"].value == 2
    rows = _rows(check, "records")
    assert [(r["id"], r["name"], r["organization"], r["field"], r["message"]) for r in rows] == [
        (invoice, f"BAD-{n}", "Acme Ltd", "lines", "an invoice needs at least one line")
        for n, invoice in zip((1, 2), bad, strict=True)
    ]
    assert f"invoice {bad[0]} (BAD-1)" in (check.description or "")

    for invoice in bad:  # fixed in Batchly: a new queue row each, pushed and acknowledged
        with engine.begin() as conn:
            conn.execute(
                sa.update(s.invoices).where(s.invoices.c.id == invoice).values(doc_number=f"FIXED-{invoice}")
            )
    for claimed in queue.claim("w", limit=10, lease=LEASE):
        with engine.begin() as conn:
            SyncQueue.ack(conn, [claimed])

    assert _evaluate(engine)["dead_letter_empty"].passed


def test_open_conflicts_are_listed_with_names_values_and_when_each_side_changed(engine: Engine) -> None:
    with engine.begin() as conn:
        org = f.organization(conn)
        customer = f.customer(conn, org, display_name="Zoë O'Brien")
        conflict = conn.execute(
            sa.insert(s.sync_conflicts).values(
                organization_id=org,
                entity_type="customer",
                entity_id=customer,
                qbo_id="58",
                field="email",
                base_value="old@example.com",
                batchly_value="ours@example.com",
                qbo_value="theirs@example.com",
                batchly_updated_at=utcnow() - timedelta(hours=2),
                qbo_updated_at=utcnow() - timedelta(hours=1),
                resolution="pending_review",
                detected_at=utcnow(),
            )
        ).inserted_primary_key[0]  # type: ignore[index]

    check = _evaluate(engine)["no_open_conflicts"]

    assert not check.passed and check.severity == AssetCheckSeverity.WARN
    [row] = _rows(check, "conflicts")
    assert row["conflict_id"] == conflict and row["name"] == "Zoë O'Brien" and row["field"] == "email"
    assert row["batchly_value"] == "ours@example.com" and row["qbo_value"] == "theirs@example.com"
    assert row["batchly_updated_at"] and row["qbo_updated_at"]
    assert (
        f"conflict {conflict}, customer {customer} (Zoë O'Brien) email: Batchly 'ours@example.com', "
        "QuickBooks 'theirs@example.com'" in (check.description or "")
    )

    with engine.begin() as conn:
        conn.execute(sa.update(s.sync_conflicts).values(resolution="quickbooks", resolved_at=utcnow()))
    assert _evaluate(engine)["no_open_conflicts"].passed


def _conflict(conn: Any, org: int, customer: int, field: str, **values: Any) -> int:
    row = {
        "organization_id": org,
        "entity_type": "customer",
        "entity_id": customer,
        "qbo_id": "58",
        "field": field,
        "base_value": "base",
        "batchly_value": "ours",
        "qbo_value": "theirs",
        "batchly_updated_at": utcnow() - timedelta(hours=2),
        "qbo_updated_at": utcnow() - timedelta(hours=1),
        "detected_at": utcnow(),
        **values,
    }
    return int(conn.execute(sa.insert(s.sync_conflicts).values(**row)).inserted_primary_key[0])


def test_recently_settled_conflicts_are_listed_with_who_settled_them_pull_push_or_a_person(
    engine: Engine,
) -> None:
    instance = DagsterInstance.ephemeral()
    pull = instance.add_run(DagsterRun(job_name="pull_customers"))
    push = instance.add_run(DagsterRun(job_name="push_to_quickbooks"))
    with engine.begin() as conn:
        org = f.organization(conn, "Acme Ltd")
        customer = f.customer(conn, org, display_name="Zoë O'Brien")
        by_pull = _conflict(conn, org, customer, "email", resolution="quickbooks", run_id=pull.run_id)
        by_push = _conflict(conn, org, customer, "phone", resolution="batchly", run_id=push.run_id)
        by_person = _conflict(
            conn,
            org,
            customer,
            "notes",
            resolution="value",
            resolved_value="agreed",
            resolved_by="ops@example.com",
            resolved_at=utcnow() - timedelta(hours=3),
        )
        _conflict(  # settled long ago: not recent
            conn,
            org,
            customer,
            "company_name",
            resolution="batchly",
            detected_at=utcnow() - timedelta(days=30),
        )
        waiting = _conflict(conn, org, customer, "given_name", resolution="pending_review")

    check = _evaluate(engine, instance)["no_open_conflicts"]

    assert not check.passed and check.metadata["open"].value == 1
    assert [row["conflict_id"] for row in _rows(check, "conflicts")] == [waiting]
    assert check.metadata["settled_recently"].value == 3
    settled = {row["conflict_id"]: row for row in _rows(check, "settled")}
    assert list(settled) == [by_push, by_pull, by_person]  # newest first
    assert settled[by_pull]["settled_by"] == f"pull_customers run {pull.run_id[:8]} (newest change wins)"
    assert settled[by_push]["settled_by"] == f"push_to_quickbooks run {push.run_id[:8]} (newest change wins)"
    assert settled[by_person]["settled_by"] == "ops@example.com"
    assert settled[by_pull]["winner"] == "quickbooks" and settled[by_pull]["chosen"] == "theirs"
    assert settled[by_push]["chosen"] == "ours" and settled[by_person]["chosen"] == "agreed"
    row = settled[by_pull]
    assert row["name"] == "Zoë O'Brien" and row["organization"] == "Acme Ltd"
    assert (row["base_value"], row["batchly_value"], row["qbo_value"]) == ("base", "ours", "theirs")
    assert row["batchly_updated_at"] and row["qbo_updated_at"] and row["settled_at"]


def test_a_connection_that_needs_reauthorisation_fails_with_the_command_that_fixes_it(engine: Engine) -> None:
    with engine.begin() as conn:
        fine, broken = f.organization(conn, "Fine"), f.organization(conn, "Broken")
    _connect(engine, fine)
    _connect(engine, broken, "needs_reauth", "the refresh token was revoked")

    check = _evaluate(engine)["connections_healthy"]

    assert not check.passed and check.severity == AssetCheckSeverity.ERROR
    [row] = _rows(check, "connections")
    assert row["organization"] == "Broken" and row["status"] == "needs_reauth"
    assert row["status_reason"] == "the refresh token was revoked"
    assert row["fix"] == f"batchly-sync connect --org {broken}"


def test_a_refresh_token_whose_hard_expiry_is_within_30_days_fails_per_organisation_with_the_reconnect_command(
    engine: Engine,
) -> None:
    with engine.begin() as conn:
        later, soon, gone = (f.organization(conn, name) for name in ("Later", "Soon", "Gone"))
    _connect(engine, later, hard_expiry_in=timedelta(days=31))
    _connect(engine, soon, hard_expiry_in=timedelta(days=12, hours=1))
    _connect(engine, gone, hard_expiry_in=-timedelta(hours=1))

    check = _evaluate(engine)["connections_healthy"]

    assert not check.passed and check.severity == AssetCheckSeverity.ERROR
    rows = {row["organization"]: row for row in _rows(check, "connections")}
    assert sorted(rows) == ["Gone", "Soon"]
    assert rows["Soon"]["status"] == "connected" and rows["Soon"]["hard_expires_at"]
    assert "expires in 12 days" in rows["Soon"]["status_reason"]
    assert "has expired" in rows["Gone"]["status_reason"]
    assert rows["Soon"]["fix"] == f"batchly-sync connect --org {soon}"
    assert f"batchly-sync connect --org {soon}" in (check.description or "")
    assert check.metadata["unhealthy"].value == 2


def test_due_rows_left_waiting_are_named_per_organisation(engine: Engine) -> None:
    with engine.begin() as conn:
        org = f.organization(conn, "Waiting Co")
        unconnected = f.organization(conn, "Never connected")
        old = f.customer(conn, org, display_name="Old One")
        f.customer(conn, org, display_name="Fresh One")
        f.customer(conn, unconnected, display_name="Not ours to push")
        q = s.sync_queue.c
        conn.execute(
            sa.update(s.sync_queue)
            .where(q.entity_id.in_([old, old + 2]))
            .values(next_attempt_at=utcnow() - timedelta(minutes=30))
        )
    _connect(engine, org)

    check = _evaluate(engine)["queue_not_waiting"]

    assert not check.passed and check.severity == AssetCheckSeverity.WARN
    [row] = _rows(check, "organizations")
    assert (row["organization"], row["waiting"], row["id"], row["name"]) == ("Waiting Co", 1, old, "Old One")
    assert 29 <= row["waited_minutes"] <= 31


def test_sync_status_job_evaluates_every_check() -> None:
    job = defs.resolve_job_def("sync_status_job")
    names = {key.name for key in job.asset_layer.asset_graph.asset_check_keys}
    assert names >= {"dead_letter_empty", "no_open_conflicts", "connections_healthy", "queue_not_waiting"}


def test_rows_waiting_for_a_connection_that_needs_a_person_say_so(engine: Engine) -> None:
    """A UI walkthrough saw 4 rows of a company that needed re-authorisation reported only as waiting, with no cause."""
    with engine.begin() as conn:
        org = f.organization(conn, "Reauth Bakery")
        customer = f.customer(conn, org, display_name="Waits")
        conn.execute(
            sa.update(s.sync_queue)
            .where(s.sync_queue.c.entity_id == customer)
            .values(next_attempt_at=utcnow() - timedelta(minutes=30))
        )
    _connect(engine, org, "needs_reauth", "the refresh token was revoked")

    check = _evaluate(engine)["queue_not_waiting"]

    assert not check.passed
    [row] = _rows(check, "organizations")
    assert row["connection"] == "needs_reauth"
    assert (
        "its QuickBooks connection needs re-authorisation: nothing is pushed until it is connected again"
        in (check.description or "")
    )
