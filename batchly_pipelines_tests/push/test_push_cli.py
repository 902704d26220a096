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
