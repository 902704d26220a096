"""``batchly-sync reconcile``: the full reconciliation from the command line, through the CLI's main entry point."""

from __future__ import annotations

import pytest

from batchly_pipelines.cli.main import main
from batchly_pipelines.store import schema as s
from batchly_pipelines_tests.reconciliation.switch import switch_after_the_read
from batchly_pipelines_tests.support.pull import Company


def test_reconcile_lists_repairs_and_fails_while_a_difference_is_open(
    connected: Company, capsys: pytest.CaptureFixture[str]
) -> None:
    ada = connected.qbo.customer("Ada")
    connected.pull()
    connected.act(
        "update_customer", customer_id=ada["Id"], fields={"Notes": "edited in QuickBooks, not pulled"}
    )
    assert main(["reconcile", "--org", str(connected.org), "--no-repair"]) == 1
    out = capsys.readouterr().out
    assert "open" in out and "notes" in out and "1 open" in out
    assert connected.row(s.customers, qbo_id=ada["Id"])["notes"] is None  # --no-repair wrote nothing

    assert main(["reconcile", "--org", str(connected.org)]) == 0
    out = capsys.readouterr().out
    assert "repaired" in out and "notes" in out and "0 open" in out
    assert connected.row(s.customers, qbo_id=ada["Id"])["notes"] == "edited in QuickBooks, not pulled"


def test_reconcile_without_a_connection_says_so(
    connected: Company, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reconcile", "--org", "999"]) == 2
    assert "did not run" in capsys.readouterr().err


def test_reconcile_refuses_when_the_organisation_is_switched_to_another_company_meanwhile(
    connected: Company, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    connected.qbo.customer("Ada")
    connected.pull()
    connected.qbo.customer("Grace")  # a repair from these books would create her
    switch_after_the_read(connected, monkeypatch)
    assert main(["reconcile", "--org", str(connected.org)]) == 2
    err = capsys.readouterr().err
    assert (
        f"organisation {connected.org} is not connected to QuickBooks company {connected.qbo.realm_id}" in err
    )
    assert [row["display_name"] for row in connected.rows(s.customers)] == ["Ada"]
