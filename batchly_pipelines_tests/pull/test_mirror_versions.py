"""The mirror takes a QuickBooks version only if it is newer than the one it holds, in the write itself: a slower read
that lands last (a nightly pull racing a webhook's read, two pulls) never puts an older SyncToken back."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.services.pull.mirror import store_objects
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.mirror import mark_deleted
from batchly_pipelines.store.upsert import COPY_FROM_ROWS
from batchly_pipelines_tests.support import factories


def _customer(qbo_id: str, token: str, notes: str) -> dict[str, Any]:
    stamp = f"2026-11-{int(token) + 1:02d}T10:00:00-08:00"
    return {
        "Id": qbo_id,
        "SyncToken": token,
        "DisplayName": "Ada",
        "Notes": notes,
        "MetaData": {"LastUpdatedTime": stamp},
    }


def _mirror(engine: Engine) -> dict[str, tuple[str, bool, str]]:
    m = s.qbo_mirror.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(m.qbo_id, m.sync_token, m.deleted, m.data)).all()
    return {qbo_id: (token, deleted, data.get("Notes")) for qbo_id, token, deleted, data in rows}


def test_an_older_version_read_last_does_not_replace_a_newer_one(engine: Engine) -> None:
    with engine.begin() as conn:
        org = factories.organization(conn)
        assert store_objects(conn, org, "Customer", [_customer("1", "3", "newer"), _customer("2", "1", "b")])
    with engine.begin() as conn:  # a read that started earlier lands now
        written = store_objects(
            conn, org, "Customer", [_customer("1", "2", "older"), _customer("2", "2", "b2")]
        )
    assert [obj["Id"] for obj in written] == ["2"]
    assert _mirror(engine) == {"1": ("3", False, "newer"), "2": ("2", False, "b2")}
    # SyncTokens compare as numbers: "10" is newer than "9"
    with engine.begin() as conn:
        store_objects(conn, org, "Customer", [_customer("2", "9", "nine")])
        store_objects(conn, org, "Customer", [_customer("2", "10", "ten")])
        store_objects(conn, org, "Customer", [_customer("2", "9", "nine again")])
    assert _mirror(engine)["2"] == ("10", False, "ten")


def test_a_forced_write_takes_the_same_version_again_but_never_an_older_one(engine: Engine) -> None:
    with engine.begin() as conn:
        org = factories.organization(conn)
        store_objects(conn, org, "Invoice", [_customer("5", "4", "four")])
        again = store_objects(conn, org, "Invoice", [_customer("5", "4", "four, re-read")], force=True)
        older = store_objects(conn, org, "Invoice", [_customer("5", "3", "three")], force=True)
    assert [obj["Id"] for obj in again] == ["5"] and older == []
    assert _mirror(engine)["5"] == ("4", False, "four, re-read")


def test_a_deletion_is_not_undone_by_a_read_of_the_version_before_it(engine: Engine) -> None:
    when = datetime(2026, 11, 5, tzinfo=UTC)
    with engine.begin() as conn:
        org = factories.organization(conn)
        store_objects(conn, org, "Customer", [_customer("7", "1", "live")])
        mark_deleted(conn, org, "Customer", {"7": when, "8": when})  # 8: never mirrored, a tombstone
    with engine.begin() as conn:
        stale = store_objects(conn, org, "Customer", [_customer("7", "1", "live"), _customer("8", "0", "x")])
    assert stale == []
    mirror = _mirror(engine)
    assert mirror["7"] == ("1", True, "live")
    assert mirror["8"][:2] == ("", True)  # QuickBooks never brings back what it deleted


def test_amounts_are_stored_as_json_numbers_exactly_by_one_row_and_by_a_batch(engine: Engine) -> None:
    amounts = {"Balance": Decimal("1250.10"), "Huge": Decimal("12345678901234567890.12")}
    with engine.begin() as conn:
        org = factories.organization(conn)
        store_objects(conn, org, "Invoice", [{**_customer("1", "0", "one"), **amounts}])
        batch = [{**_customer(str(n), "0", "batch"), **amounts} for n in range(2, 2 + COPY_FROM_ROWS)]
        store_objects(conn, org, "Invoice", batch)
    with engine.connect() as conn:
        stored = [data for (data,) in conn.execute(sa.select(s.qbo_mirror.c.data)).all()]
    assert len(stored) == 1 + COPY_FROM_ROWS
    # a float that carries the decimal exactly is a JSON number, as on the wire; one that would not, a string
    assert {(data["Balance"], data["Huge"]) for data in stored} == {(1250.1, "12345678901234567890.12")}


def test_a_batch_of_new_rows_and_a_batch_mixing_held_ones_keep_the_version_rules(engine: Engine) -> None:
    # an import's page (none held: straight into the mirror on PostgreSQL) and one that holds known ids (upserted)
    first = [_customer(str(n), "1", "first") for n in range(COPY_FROM_ROWS)]
    first.append(_customer("0", "2", "first, again"))  # one id twice in a page: the later one is written
    with engine.begin() as conn:
        org = factories.organization(conn)
        written = store_objects(conn, org, "Customer", first)
    assert {obj["Id"] for obj in written} == {str(n) for n in range(COPY_FROM_ROWS)}
    mirror = _mirror(engine)
    assert len(mirror) == COPY_FROM_ROWS and mirror["0"] == ("2", False, "first, again")
    second = [_customer(str(n), "0" if n < 10 else "3", "second") for n in range(5, 5 + COPY_FROM_ROWS)]
    with engine.begin() as conn:
        written = store_objects(conn, org, "Customer", second)
    # the older versions of 5..9 are not written; 10.. are newer (or new)
    assert {obj["Id"] for obj in written} == {str(n) for n in range(10, 5 + COPY_FROM_ROWS)}
    mirror = _mirror(engine)
    assert mirror["5"] == ("1", False, "first") and mirror["10"] == ("3", False, "second")
    assert mirror[str(4 + COPY_FROM_ROWS)] == ("3", False, "second")
    assert len(mirror) == 5 + COPY_FROM_ROWS
