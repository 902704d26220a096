"""Links with their merge base, and the sync log, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.store import schema as s
from batchly_pipelines.store.db import sync_transaction
from batchly_pipelines.store.sync_state import LogEntry, SyncState, load_states, save_states, write_log
from batchly_pipelines_tests.support import factories as f


def test_links_are_created_moved_and_filtered(engine: Engine) -> None:
    with engine.begin() as conn:
        org = f.organization(conn)
        first, second = f.customer(conn, org, "A"), f.customer(conn, org, "B")
    seen = datetime(2026, 11, 21, 3, 0, 5, tzinfo=UTC)
    with sync_transaction(engine) as conn:
        save_states(
            conn,
            [
                SyncState(org, "customer", first, "58", "0", {"display_name": "A", "email": None}, seen),
                SyncState(org, "customer", second, "59", "3", {"display_name": "B"}),
            ],
        )
        save_states(
            conn, [SyncState(org, "customer", first, "58", "1", {"display_name": "A2", "email": "a@x"})]
        )
    with engine.connect() as conn:
        [moved] = load_states(conn, org, "customer", qbo_ids=["58"])
        assert (moved.entity_id, moved.sync_token, dict(moved.base)) == (
            first,
            "1",
            {"display_name": "A2", "email": "a@x"},
        )
        assert [s.qbo_id for s in load_states(conn, org, "customer")] == ["58", "59"]
        assert [s.qbo_id for s in load_states(conn, org, "customer", entity_ids=[second])] == ["59"]
        assert load_states(conn, org, "item") == []
        assert f.queue_rows(conn)[0]["change_count"] == 1, "saving links is not an app write"


def test_log_entries_are_appended(engine: Engine) -> None:
    with engine.begin() as conn:
        org = f.organization(conn)
        assert (
            write_log(
                conn,
                [
                    LogEntry(org, "push", "invoice", "create", "ok", entity_id=1, qbo_id="130"),
                    LogEntry(
                        org,
                        "push",
                        "invoice",
                        "create",
                        "error",
                        entity_id=2,
                        message="invoices[2].lines: none",
                    ),
                ],
            )
            == 2
        )
        outcomes = conn.execute(sa.select(s.sync_log.c.outcome, s.sync_log.c.message).order_by("id")).all()
    assert outcomes == [("ok", None), ("error", "invoices[2].lines: none")]
