"""``batchly-sync pull`` / ``conflicts list|resolve`` end to end, and settling link reviews."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from batchly_pipelines.cli.main import main
from batchly_pipelines.services.pull.resolve import resolve_conflicts
from batchly_pipelines.store import schema as s
from batchly_pipelines_tests.support import factories
from batchly_pipelines_tests.support.pull import Company, open_conflicts


def test_pull_and_conflicts_from_the_command_line(
    connected: Company, capsys: pytest.CaptureFixture[str]
) -> None:
    ada = connected.qbo.customer("Ada", Notes="base")
    assert main(["pull", "--org", str(connected.org)]) == 0
    assert "created 1" in capsys.readouterr().out
    row = connected.row(s.customers, qbo_id=ada["Id"])
    with connected.engine.begin() as conn:
        conn.execute(sa.update(s.customers).where(s.customers.c.id == row["id"]).values(notes="from Batchly"))
    connected.act("update_customer", customer_id=ada["Id"], fields={"Notes": "from QuickBooks"})
    assert main(["pull", "--org", str(connected.org), "--review-field", "notes"]) == 0

    assert main(["conflicts", "list", "--org", str(connected.org)]) == 0
    listed = capsys.readouterr().out
    assert '"from Batchly"' in listed and '"from QuickBooks"' in listed and "1 conflict(s)" in listed
    [conflict] = open_conflicts(connected.engine)
    code = main(["conflicts", "resolve", "--id", str(conflict["id"]), "--winner", "batchly", "--by", "ana"])
    assert code == 0 and "resolved by ana" in capsys.readouterr().out
    assert open_conflicts(connected.engine) == []
    assert connected.row(s.customers, id=row["id"])["notes"] == "from Batchly"
    with pytest.raises(SystemExit):
        main(["conflicts", "resolve", "--org", str(connected.org)])  # no --winner
    assert main(["pull", "--org", "999"]) == 2
    assert "no QuickBooks connection" in capsys.readouterr().err


def test_a_link_review_is_settled_by_creating_or_linking(company: Company) -> None:
    with company.engine.begin() as conn:
        twins = [
            factories.customer(conn, company.org, "Joe's Garage", email=f"joe{n}@a.example") for n in (1, 2)
        ]
    first = company.qbo.customer("Joe's Garage", PrimaryEmailAddr={"Address": "other@b.example"})
    company.pull()
    [review] = open_conflicts(company.engine)
    assert review["batchly_value"] == f"{twins[0]},{twins[1]}"
    with pytest.raises(ValueError, match="2 candidates"):
        resolve_conflicts(company.engine, winner="batchly", resolved_by="ana", conflict_ids=[review["id"]])
    [done] = resolve_conflicts(
        company.engine, winner="value", value=twins[1], resolved_by="ana", conflict_ids=[review["id"]]
    )
    linked = company.row(s.customers, id=twins[1])
    assert (done.chosen, linked["qbo_id"], linked["email"]) == (twins[1], first["Id"], "other@b.example")
    with company.engine.connect() as conn:
        states = conn.execute(sa.select(s.qbo_sync_state.c.entity_id)).scalars().all()
    assert states == [twins[1]]

    company.qbo.customer("joe's garage ", PrimaryEmailAddr={"Address": "third@c.example"}, GivenName="Joe")
    company.pull()
    [again] = open_conflicts(company.engine)
    resolve_conflicts(company.engine, winner="quickbooks", resolved_by="ana", conflict_ids=[again["id"]])
    created = company.row(s.customers, qbo_id=again["qbo_id"])
    assert (created["given_name"], created["email"]) == ("Joe", "third@c.example")
    assert len(company.rows(s.customers)) == 3 and open_conflicts(company.engine) == []
