"""A dead-lettered record that is fixed and then pushed leaves the dead letter: ``status`` stops counting it."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.services.push.organization import PushStats
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.status import dead_letter, organization_status
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.push import Books


def test_fixing_and_pushing_a_dead_invoice_closes_its_dead_row(
    engine: Engine, org: int, books: Books, push: Callable[..., PushStats]
) -> None:
    with engine.begin() as conn:
        customer = f.customer(conn, org)
        item = f.item(conn, org)
        invoice = f.invoice(conn, org, customer, item, doc_number="1604", lines=0)
    assert push().dead == 1
    [dead] = dead_letter(engine)
    assert dead["entity_id"] == invoice and "an invoice needs at least one line" in dead["last_error"]

    with engine.begin() as conn:  # the operator adds the missing line and the total (the app's writes)
        conn.execute(
            sa.insert(s.invoice_lines).values(
                invoice_id=invoice,
                line_no=1,
                item_id=item,
                quantity=Decimal(2),
                unit_price=Decimal("10.10"),
                amount=Decimal("20.20"),
            )
        )
        conn.execute(
            sa.update(s.invoices).where(s.invoices.c.id == invoice).values(total_amount=Decimal("20.20"))
        )
    stats = push()

    assert (stats.failed, stats.dead) == (0, 0) and list(books.by_doc_number()) == ["1604"]
    assert dead_letter(engine) == []
    [status] = [row for row in organization_status(engine) if row["organization_id"] == org]
    assert status["dead"] == 0
    rows = _queue_rows(engine, invoice)
    assert rows[0]["status"] == "done" and rows[0]["last_error"].startswith(
        f"superseded by queue row {rows[-1]['id']}"
    )


def _queue_rows(engine: Engine, invoice: int) -> list[dict[str, Any]]:
    q = s.sync_queue.c
    with engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                sa.select(s.sync_queue)
                .where(q.entity_type == "invoice", q.entity_id == invoice)
                .order_by(q.id)
            ).mappings()
        ]
