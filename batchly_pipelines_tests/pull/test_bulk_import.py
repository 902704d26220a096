"""A batch large enough to travel by COPY on PostgreSQL (``store.upsert``) stores every value exactly as a few rows do:
quotes, backslashes, tabs, newlines, ``%``, unicode, empty strings and missing values, in Batchly's columns, the
mirror's JSON, the links' bases and the sync log."""

from __future__ import annotations

import sqlalchemy as sa

from batchly_pipelines.quickbooks.client import WriteOp
from batchly_pipelines.rules.mapping import decode_snapshot
from batchly_pipelines.rules.name_lists import CUSTOMERS
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.sync_state import load_states
from batchly_pipelines.store.upsert import COPY_FROM_ROWS
from batchly_pipelines_tests.support.pull import Company, queue

AWKWARD = ["O'Brien", "back\\slash", "tab\there", "50% off", "Zoë 東京 🚀", "\\N", "line\nbreak", "x" * 480]


def _customer(n: int) -> dict[str, object]:
    name = f"{AWKWARD[n % len(AWKWARD)]} {n}"
    fields: dict[str, object] = {"DisplayName": name.replace("\t", " ").replace("\n", " ")[:500]}
    if n % 2:
        fields["Notes"] = AWKWARD[(n + 3) % len(AWKWARD)]
        fields["PrimaryEmailAddr"] = {"Address": f"c{n}@example.com"}
    if n % 3 == 0:
        fields["CompanyName"] = ""
    return fields


def test_a_batch_is_stored_value_for_value(company: Company) -> None:
    count = COPY_FROM_ROWS * 2 + 7
    ops = [WriteOp(n, "Customer", "create", _customer(n), f"bulk-{n}") for n in range(count)]
    assert all(result.ok for result in company.client.write_batch(ops))
    result = company.pull()
    assert result.batchly_customers.created == count

    in_quickbooks = {obj["Id"]: obj for obj in company.client.query_all("Customer")}
    assert len(in_quickbooks) == count
    with company.engine.connect() as conn:
        mirrored = dict(conn.execute(sa.select(s.qbo_mirror.c.qbo_id, s.qbo_mirror.c.data)).all())
        states = {state.qbo_id: state for state in load_states(conn, company.org, "customer")}
        logged = conn.execute(
            sa.select(sa.func.count()).select_from(s.sync_log).where(s.sync_log.c.action == "create")
        ).scalar_one()
    assert logged == count
    assert (
        queue(company.engine) == []
    )  # rows written by COPY are the sync's own: nothing echoes back as a push
    for row in company.rows(s.customers):
        qbo = in_quickbooks[row["qbo_id"]]
        expected = CUSTOMERS.mapping.from_qbo(qbo)
        assert CUSTOMERS.mapping.from_row(row) == expected, row["qbo_id"]
        assert decode_snapshot("customer", states[row["qbo_id"]].base) == expected
        assert mirrored[row["qbo_id"]]["DisplayName"] == qbo["DisplayName"]
        assert mirrored[row["qbo_id"]].get("Notes") == qbo.get("Notes")
