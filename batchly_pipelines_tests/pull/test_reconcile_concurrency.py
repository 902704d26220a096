"""Reconcile never overwrites a Batchly edit it did not read (issue 10, failure 5).

The app edits a customer after the reconciliation read it and before it wrote: the read and the write of a batch are
one transaction holding the batch's rows (``SELECT … FOR UPDATE`` on PostgreSQL, SQLite's write lock), so the app's
edit waits for the reconciliation to commit and then lands on top of it — the push sees it and sends it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from batchly_pipelines.rules.mapping import decode_snapshot
from batchly_pipelines.rules.name_lists import CUSTOMERS
from batchly_pipelines.services.pull import reconcile as reconcile_module
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.db import Connection
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines.store.sync_state import load_states
from batchly_pipelines_tests.support.pull import Company, queue

EDIT_GRACE_S = (
    0.5  # how long the reconciliation lets the app's edit try to commit between its read and its write
)


def _edit_between_read_and_write(
    company: Company, monkeypatch: pytest.MonkeyPatch, **values: Any
) -> list[Any]:
    """Right after the reconciliation has read its batch's Batchly rows, the app updates the first of them from
    another connection; returns the app thread (in a list, once started)."""
    read = reconcile_module.lock_rows
    started: list[threading.Thread] = []

    def app_edit(row_id: int) -> None:
        with company.engine.begin() as conn:
            conn.execute(sa.update(s.customers).where(s.customers.c.id == row_id).values(**values))

    def spy(
        conn: Connection, entity_type: str, ids: Iterable[int], **kwargs: Any
    ) -> dict[int, dict[str, Any]]:
        rows = read(conn, entity_type, ids, **kwargs)
        if rows and not started:
            thread = threading.Thread(target=app_edit, args=(min(rows),))
            started.append(thread)
            thread.start()
            thread.join(EDIT_GRACE_S)  # unlocked, the edit commits now, under the reconciliation's feet
        return rows

    monkeypatch.setattr(reconcile_module, "lock_rows", spy)
    return started


def test_a_batchly_edit_committed_while_reconcile_runs_is_kept_and_pushed(
    company: Company, monkeypatch: pytest.MonkeyPatch
) -> None:
    ada = company.qbo.customer("Ada", Notes="base")
    company.pull()
    row = company.row(s.customers, qbo_id=ada["Id"])
    company.act("update_customer", customer_id=ada["Id"], fields={"Notes": "from QuickBooks"})
    # the app's edit of the same field is newer than QuickBooks' (an hour ahead, whatever the clocks say)
    started = _edit_between_read_and_write(
        company, monkeypatch, notes="from Batchly", updated_at=utcnow() + timedelta(hours=1)
    )
    company.pull()
    assert started, "the reconciliation read Ada's Batchly row"
    started[0].join(30)
    assert not started[0].is_alive()

    assert company.row(s.customers, id=row["id"])["notes"] == "from Batchly"
    with company.engine.connect() as conn:
        [state] = load_states(conn, company.org, "customer")
    base = decode_snapshot("customer", state.base)
    current = CUSTOMERS.mapping.from_row(company.row(s.customers, id=row["id"]))
    # the push has something to send: Batchly's value differs from the agreed base
    assert base["notes"] != current["notes"] == "from Batchly"
    assert [(q["entity_type"], q["entity_id"]) for q in queue(company.engine)] == [("customer", row["id"])]
