"""``batchly-sync push``: the operator's "push now", with its summary and exit status."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from batchly_pipelines.cli.main import main
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.push import Books


def test_push_command_pushes_chosen_invoices_and_reports_failures(
    engine: Engine, org: int, books: Books, environment: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with engine.begin() as conn:
        customer = f.customer(conn, org)
        item = f.item(conn, org)
        chosen = f.invoice(conn, org, customer, item, doc_number="CLI-1")
        f.invoice(conn, org, customer, item, doc_number="CLI-2")

    assert main(["push", "--org", str(org), "--invoice", str(chosen)]) == 0
    assert list(books.by_doc_number()) == ["CLI-1"]
    assert "invoice.create 1" in capsys.readouterr().out

    with engine.begin() as conn:
        f.customer(conn, org, display_name="Bad: name")
    assert main(["push", "--org", str(org)]) == 1
    out = capsys.readouterr().out
    assert sorted(books.by_doc_number()) == ["CLI-1", "CLI-2"]
    assert "1 in the dead letter" in out


def test_push_command_says_so_when_the_database_stays_away(
    engine: Engine,
    org: int,
    books: Books,
    environment: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sqlalchemy as sa

    from batchly_pipelines.services.push import organization as push_module

    def gone(*args: object, **kwargs: object) -> object:
        raise sa.exc.OperationalError("SELECT invoice_lines", {}, Exception("server closed the connection"))

    with engine.begin() as conn:
        f.invoice(conn, org, f.customer(conn, org), f.item(conn, org), doc_number="DB-1")
    monkeypatch.setattr(push_module, "load_invoice_lines", gone)
    monkeypatch.setattr(push_module, "FENCE_RETRY_SECONDS", 0.01)

    assert main(["push", "--org", str(org)]) == 1
    err = capsys.readouterr().err
    assert "did not run to the end: the database did not answer" in err
    assert "Traceback" not in err
