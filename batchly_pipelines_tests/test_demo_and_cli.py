"""Demo data and the operator CLI, on the real database."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.cli import main as cli
from batchly_pipelines.store import migrate
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.demo import create_demo
from batchly_pipelines.store.queue import SyncQueue

TODAY = date(2026, 11, 21)


def _snapshot(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    with engine.connect() as conn:
        return {
            "customers": conn.execute(
                sa.select(s.customers.c.display_name, s.customers.c.email, s.customers.c.phone).order_by("id")
            ).all(),
            "lines": conn.execute(
                sa.select(
                    s.invoice_lines.c.item_id, s.invoice_lines.c.quantity, s.invoice_lines.c.amount
                ).order_by("id")
            ).all(),
        }


def test_demo_is_deterministic_realistic_and_consistent(engine: Engine) -> None:
    first = create_demo(engine, customers=40, items=12, invoices=60, seed=7, today=TODAY)
    assert (first.customers, first.items, first.invoices) == (40, 12, 60)
    with engine.connect() as conn:
        names = list(conn.execute(sa.select(s.customers.c.display_name)).scalars())
        assert any("'" in n for n in names) and any(any(ord(ch) > 127 for ch in n) for n in names)
        totals = conn.execute(
            sa.select(s.invoices.c.total_amount, sa.func.sum(s.invoice_lines.c.amount), sa.func.count())
            .join(s.invoice_lines)
            .group_by(s.invoices.c.id, s.invoices.c.total_amount)
        ).all()
        assert all(Decimal(total) == Decimal(lines) for total, lines, _ in totals)
        assert max(count for *_, count in totals) > 1, "multi-line invoices"
        partial = conn.execute(
            sa.select(sa.func.count()).where(
                s.sales_order_lines.c.quantity_invoiced < s.sales_order_lines.c.quantity
            )
        ).scalar()
        assert partial and partial > 0, "some sales orders are only partly invoiced"
    depth = SyncQueue(engine).depth()[first.organization_id]
    assert depth["pending"] == 40 + 12 + 60, "every created record waits to be pushed; sales orders never"

    again = _snapshot(engine)
    create_demo(engine, customers=40, items=12, invoices=60, seed=7, today=TODAY, name="Second")
    with engine.connect() as conn:
        second_customers = conn.execute(
            sa.select(s.customers.c.display_name, s.customers.c.email, s.customers.c.phone)
            .where(s.customers.c.organization_id != first.organization_id)
            .order_by("id")
        ).all()
    assert second_customers == again["customers"]


def test_demo_refuses_invoices_without_customers(engine: Engine) -> None:
    with pytest.raises(ValueError, match="--customers"):
        create_demo(engine, customers=0, items=3, invoices=2)


def test_cli_migrates_creates_demo_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BATCHLY_DATABASE_URL", raising=False)
    assert cli.main(["db", "upgrade"]) == 0
    assert f"at revision {migrate.head_revision()}" in capsys.readouterr().out
    assert (
        cli.main(["demo", "--customers", "5", "--items", "3", "--invoices", "4", "--today", "2026-11-21"])
        == 0
    )
    assert "5 customers, 3 items, 4 sales orders, 4 invoices" in capsys.readouterr().out
    assert cli.main(["status"]) == 0
    status = capsys.readouterr().out
    assert "Batchly Demo Company" in status and "not connected" in status and " 12 " in status
    assert cli.main(["queue", "list", "--status", "pending", "--limit", "3"]) == 0
    assert "3 row(s)" in capsys.readouterr().out
    assert (tmp_path / ".batchly" / "batchly.sqlite").exists()


def test_cli_reports_configuration_errors_clearly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("QBO_ENVIRONMENT", "prod")
    assert cli.main(["status"]) == 2
    assert (
        "configuration error: QBO_ENVIRONMENT: expected one of local, sandbox, production"
        in capsys.readouterr().err
    )
