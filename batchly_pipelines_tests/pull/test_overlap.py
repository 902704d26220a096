"""The reconciliation following the mirror while the pages arrive (``services.pull.overlap``, issue 13).

Two organisations of one database pull the same realm, one the mirror then the reconciliation, the other both at
once: their Batchly rows, links, conflicts (link reviews and a Batchly record two QuickBooks records claim included),
error list, queued pushes and cursors come out the same, on the first import and on the pull after edits. An error
in either half fails the call with that error and leaves a state the next pull completes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from batchly_pipelines.quickbooks.client import QueryPage
from batchly_pipelines.services.pull import reconcile as reconcile_module
from batchly_pipelines.services.pull.organization import (
    cursor_name,
    pull_customers,
    reconcile_customers,
)
from batchly_pipelines.services.pull.overlap import Overlapped, pull_and_reconcile_customers
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.cursors import get_cursor
from batchly_pipelines.store.db import Connection, Engine
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.pull.test_reconcile_concurrency import _edit_between_read_and_write
from batchly_pipelines_tests.support import factories
from batchly_pipelines_tests.support.pull import Company, queue

SEEDED = 2_400  # three pages and more: several batches while the pages arrive
NUL_NOTES = "gate code 12\x0034"


class Injected(RuntimeError):
    """The fault a test injects."""


@pytest.fixture
def slow(company: Company) -> Iterator[None]:
    """Every query answer takes 0.3 s longer, so the reconciliation has pages to follow while others come."""
    query = company.client.query

    def slower(statement: str) -> QueryPage:
        time.sleep(0.3)
        return query(statement)

    company.client.query = slower  # type: ignore[method-assign]
    yield
    company.client.query = query  # type: ignore[method-assign]


def _realm(company: Company) -> dict[str, Any]:
    """A realm of ``SEEDED`` customers and the awkward ones: a name an unlinked Batchly record has with the same
    e-mail (linked), one with another e-mail (reviewed), notes Batchly cannot store, and two QuickBooks spellings of
    one Batchly name with its e-mail — one among the oldest rows (an early page), one just created (the last page)
    and first in the mirror's key order: a reconciliation after the mirror links the new one, so must a
    reconciliation that meets the old one's page first."""
    seeded = company.qbo.admin.seed(
        company.qbo.realm_id, customers=SEEDED, items=0, invoices=0, payments=0, days=365, seed=11
    )
    by_id = {obj["Id"]: obj for obj in company.client.query_all("Customer")}
    newest = company.qbo.customer("Placeholder")  # the ids the next customers get, in key order
    oldest = sorted(seeded["Customer"], key=lambda qbo_id: by_id[qbo_id]["MetaData"]["LastUpdatedTime"])
    old = next(by_id[i] for i in oldest[:500] if i > newest["Id"] and " " in by_id[i]["DisplayName"])
    spelling = old["DisplayName"].upper().replace(" ", "  ", 1)  # the same name once normalised
    new = company.qbo.customer(spelling, PrimaryEmailAddr=old["PrimaryEmailAddr"])
    assert new["Id"] < old["Id"]
    company.qbo.customer("Nul Notes", Notes=NUL_NOTES)
    same, other = (by_id[qbo_id] for qbo_id in seeded["Customer"][10:12])
    return {"same": same, "other": other, "claimed": old, "claimants": (new["Id"], old["Id"])}


def _unlinked(conn: Connection, org: int, realm: dict[str, Any]) -> None:
    same, other, claimed = realm["same"], realm["other"], realm["claimed"]
    factories.customer(conn, org, same["DisplayName"], email=same["PrimaryEmailAddr"]["Address"])
    factories.customer(conn, org, other["DisplayName"], email="someone.else@example.org")
    factories.customer(conn, org, claimed["DisplayName"], email=claimed["PrimaryEmailAddr"]["Address"])


def _snapshot(engine: Engine, org: int) -> dict[str, Any]:
    """What an import left in Batchly for ``org``, free of the ids and clocks that differ between organisations."""
    with engine.connect() as conn:
        customers = [
            dict(r)
            for r in conn.execute(
                sa.select(s.customers).where(s.customers.c.organization_id == org)
            ).mappings()
        ]
        names = {row["id"]: row["display_name"] for row in customers}

        def key(row: dict[str, Any]) -> Any:
            return row["qbo_id"] or ("unlinked", row["display_name"])

        rows = {
            key(row): {
                k: v for k, v in row.items() if k not in ("id", "organization_id", "created_at", "updated_at")
            }
            for row in customers
        }
        st = s.qbo_sync_state.c
        links = {
            qbo_id: (names[entity_id], token, base)
            for qbo_id, entity_id, token, base in conn.execute(
                sa.select(st.qbo_id, st.entity_id, st.sync_token, st.base).where(st.organization_id == org)
            )
        }
        c = s.sync_conflicts.c
        conflicts = sorted(
            [
                (  # sorted by repr: comparable whatever is None
                    names.get(row["entity_id"]),
                    row["qbo_id"],
                    row["field"],
                    str(row["base_value"]),
                    ",".join(names[int(i)] for i in row["batchly_value"].split(","))
                    if row["field"] == "link"
                    else str(row["batchly_value"]),
                    str(row["qbo_value"]),
                    row["resolution"],
                    row["reason"],
                )
                for row in conn.execute(
                    sa.select(s.sync_conflicts).where(c.organization_id == org)
                ).mappings()
            ],
            key=repr,
        )
        e = s.pull_errors.c
        errors = sorted(
            tuple(row)
            for row in conn.execute(sa.select(e.qbo_id, e.field, e.message).where(e.organization_id == org))
        )
        q = s.sync_queue.c
        queued = sorted(
            names[entity_id]
            for (entity_id,) in conn.execute(sa.select(q.entity_id).where(q.organization_id == org)).all()
        )
        m, rc = s.qbo_mirror.c, s.qbo_reconciled.c
        reconciled = set(
            conn.execute(
                sa.select(m.qbo_id)
                .join(
                    s.qbo_reconciled,
                    sa.and_(
                        rc.organization_id == m.organization_id,
                        rc.entity_type == m.entity_type,
                        rc.qbo_id == m.qbo_id,
                        rc.mirror_version == m.version,
                    ),
                )
                .where(m.organization_id == org)
            ).scalars()
        )
        cursor = get_cursor(conn, org, cursor_name("Customer"))
    return {
        "customers": rows,
        "links": links,
        "conflicts": conflicts,
        "errors": errors,
        "queued": queued,
        "reconciled": reconciled,
        "cursor": cursor,
    }


def _sequential(company: Company, org: int) -> None:
    pull_customers(company.engine, company.client, org, company.window())
    reconcile_customers(company.engine, org)


def _overlapped(company: Company, org: int) -> Overlapped:
    return pull_and_reconcile_customers(company.engine, company.client, org, company.window())


def _same(first: dict[str, Any], second: dict[str, Any]) -> None:
    for name in ("customers", "links", "conflicts", "errors", "queued", "reconciled"):
        assert first[name] == second[name], name
    assert first["cursor"] is not None and second["cursor"] is not None


@pytest.mark.usefixtures("slow")
def test_an_overlapped_import_leaves_what_the_mirror_then_the_reconciliation_leaves(company: Company) -> None:
    realm = _realm(company)
    with company.engine.begin() as conn:
        twin = factories.organization(conn, "Acme Twin")
        for org in (company.org, twin):
            _unlinked(conn, org, realm)

    _sequential(company, company.org)
    done = _overlapped(company, twin)

    assert done.reconciled_during_mirror > 0, "the reconciliation followed the pages"
    assert done.deferred >= 3  # the rows a name match could claim waited for the final pass
    assert done.mirror_seconds <= done.seconds and done.tail_seconds <= done.seconds
    sequential, overlapped = _snapshot(company.engine, company.org), _snapshot(company.engine, twin)
    _same(sequential, overlapped)
    new, old = realm["claimants"]
    claimed = realm["claimed"]["DisplayName"]
    assert new in overlapped["links"]  # linked to the Batchly record: the first claimant in key order
    assert ("unlinked", claimed) not in overlapped["customers"]  # the Batchly record was taken
    assert overlapped["customers"][old]["display_name"] == claimed  # created
    assert [field for _, _, field, *_ in overlapped["conflicts"]].count("link") == 1
    assert len(overlapped["errors"]) == 1 and overlapped["errors"][0][1] == "notes"
    # every QuickBooks record but the unstorable one, less the two linked and the one under review, and the three
    # Batchly records that were there
    assert len(overlapped["customers"]) == (SEEDED + 3 - 1 - 3) + 3

    # a pull after edits on both sides: merges, a new review field value, a Batchly edit waiting for its push
    ids = sorted(overlapped["links"])[:40]
    for qbo_id in ids[:20]:
        company.act("update_customer", customer_id=qbo_id, fields={"Notes": f"QuickBooks {qbo_id}"})
    for org in (company.org, twin):
        with company.engine.begin() as conn:
            conn.execute(
                sa.update(s.customers)
                .where(s.customers.c.organization_id == org, s.customers.c.qbo_id.in_(ids[20:]))
                .values(phone="(555) 000-0000")
            )
    _sequential(company, company.org)
    again = _overlapped(company, twin)
    assert again.reconciled.updated == 20
    _same(_snapshot(company.engine, company.org), _snapshot(company.engine, twin))


def test_a_failing_reconciliation_fails_the_call_and_the_next_pull_completes(
    company: Company, monkeypatch: pytest.MonkeyPatch
) -> None:
    company.qbo.admin.seed(company.qbo.realm_id, customers=2_500, items=0, invoices=0, payments=0, days=30)
    batch = reconcile_module.Reconciler.batch
    calls = [0]

    def failing(self: Any, ids: Any, **kwargs: Any) -> int:
        calls[0] += 1
        if calls[0] == 2:
            raise Injected("the second batch fails")
        return batch(self, ids, **kwargs)

    monkeypatch.setattr(reconcile_module.Reconciler, "batch", failing)
    with pytest.raises(Injected, match="second batch"):
        _overlapped(company, company.org)
    monkeypatch.setattr(reconcile_module.Reconciler, "batch", batch)

    _overlapped(company, company.org)
    with company.engine.connect() as conn:
        created = conn.execute(
            sa.select(sa.func.count()).select_from(s.sync_log).where(s.sync_log.c.action == "create")
        ).scalar_one()
    assert len(company.rows(s.customers)) == created == 2_500  # each created once, before or after the fault
    snapshot = _snapshot(company.engine, company.org)
    assert len(snapshot["reconciled"]) == 2_500 and snapshot["cursor"] is not None


def test_a_failing_mirror_fails_the_call_stops_the_reconciliation_and_moves_no_cursor(
    company: Company,
) -> None:
    company.qbo.admin.seed(company.qbo.realm_id, customers=3_000, items=0, invoices=0, payments=0, days=30)
    query = company.client.query
    answered = [0]
    lock = threading.Lock()

    def failing(statement: str) -> QueryPage:
        with lock:
            answered[0] += 1
            fail = answered[0] == 3
        if fail:
            raise Injected("QuickBooks went away")
        return query(statement)

    company.client.query = failing  # type: ignore[method-assign]
    with pytest.raises(Injected, match="went away"):
        _overlapped(company, company.org)
    company.client.query = query  # type: ignore[method-assign]
    with company.engine.connect() as conn:
        assert get_cursor(conn, company.org, cursor_name("Customer")) is None

    _overlapped(company, company.org)
    snapshot = _snapshot(company.engine, company.org)
    assert len(snapshot["customers"]) == 3_000 and len(snapshot["reconciled"]) == 3_000
    assert snapshot["cursor"] is not None


@pytest.mark.usefixtures("slow")
def test_a_batchly_edit_committed_during_an_overlapped_import_is_kept_and_pushed(
    company: Company, monkeypatch: pytest.MonkeyPatch
) -> None:
    company.qbo.admin.seed(company.qbo.realm_id, customers=1_500, items=0, invoices=0, payments=0, days=30)
    ada = company.qbo.customer("Ada Lovelace", PrimaryEmailAddr={"Address": "ada@example.com"}, Notes="QBO")
    with company.engine.begin() as conn:
        twin = factories.customer(conn, company.org, "Ada Lovelace", email="ada@example.com")
    # the app edits Ada right after the reconciliation locked her row to link and merge her, newer than QuickBooks
    started = _edit_between_read_and_write(
        company, monkeypatch, notes="from Batchly", updated_at=utcnow() + timedelta(hours=1)
    )
    _overlapped(company, company.org)
    assert started, "the reconciliation read Ada's Batchly row"
    started[0].join(30)
    assert not started[0].is_alive()

    row = company.row(s.customers, id=twin)
    assert (row["qbo_id"], row["notes"]) == (ada["Id"], "from Batchly")  # linked, and the edit stands
    assert [(q["entity_type"], q["entity_id"]) for q in queue(company.engine)] == [("customer", twin)]
