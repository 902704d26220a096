"""'Sync to QuickBooks now': which invoices a push run was asked for, and what became of each.

The launchpad's ``doc_numbers`` and ``invoice_ids`` are resolved within the run's organisation (another
organisation's invoice is unknown here, never pushed). After the push every one is reported — pushed, already synced,
skipped by rule (a draft), failed (retried automatically), dead (with the reason and the way out), waiting, not
queued, or unknown — as a table and one log line each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dagster import OpExecutionContext

from batchly_pipelines.store.db import Engine
from batchly_pipelines.store.status import find_invoices, invoice_push_report

SETTLED = ("pushed", "already synced", "skipped")  # outcomes that leave the run green


@dataclass(frozen=True)
class Wanted:
    """An invoice asked for: what was typed and the invoice it names (``None``: no such invoice)."""

    requested: str
    invoice_id: int | None


def wanted(
    engine: Engine, organization_id: int, doc_numbers: Sequence[str], invoice_ids: Sequence[int]
) -> list[Wanted]:
    """The invoices asked for, each DocNumber or id resolved within the organisation (or not: ``None``)."""
    if not doc_numbers and not invoice_ids:
        return []
    found = find_invoices(engine, organization_id, ids=invoice_ids, doc_numbers=doc_numbers)
    by_number: dict[str, list[int | None]] = {}
    for row in found:
        by_number.setdefault(row["doc_number"], []).append(row["id"])
    ids = {row["id"] for row in found}
    by_doc_number = [
        Wanted(number, invoice_id)
        for number in dict.fromkeys(n.strip() for n in doc_numbers)
        for invoice_id in by_number.get(number) or [None]
    ]
    by_id = [
        Wanted(f"id {invoice_id}", invoice_id if invoice_id in ids else None)
        for invoice_id in dict.fromkeys(invoice_ids)
    ]
    return by_doc_number + by_id


def report(
    context: OpExecutionContext, engine: Engine, organization_id: int, wanted: Sequence[Wanted]
) -> list[dict[str, Any]]:
    """Per invoice asked for: where it stands after this run, each logged (ERROR unless it is settled)."""
    known = {
        row["id"]: row
        for row in invoice_push_report(
            engine, [w.invoice_id for w in wanted if w.invoice_id is not None], context.run.run_id
        )
    }
    rows = []
    for w in wanted:
        invoice = known.get(w.invoice_id) if w.invoice_id is not None else None
        if invoice is None:
            what = (
                f"invoice {w.invoice_id}"
                if w.requested.startswith("id ")
                else f"invoice with DocNumber {w.requested}"
            )
            row: dict[str, Any] = {
                "requested": w.requested,
                "outcome": "unknown",
                "detail": f"no {what} in organisation {organization_id}",
            }
        else:
            outcome, detail = _outcome(invoice)
            row = {**invoice, "requested": w.requested, "outcome": outcome, "detail": detail}
        rows.append(row)
        name = f"invoice {row['id']} ({row['doc_number']})" if "id" in row else "invoice"
        line = f"Sync now {w.requested}: {name} {row['outcome']} — {row['detail']}"
        (context.log.info if row["outcome"] in SETTLED else context.log.error)(line)
    return rows


def _outcome(invoice: dict[str, Any]) -> tuple[str, str]:
    """An invoice's "Sync now" outcome and why, from :func:`~batchly_pipelines.store.status.invoice_push_report`."""
    retry = "fix the invoice (an edit queues it again) or retry it with the retry_dead_letter job"
    if invoice["run_outcome"] == "ok":
        if invoice["run_action"] == "skip":
            return "skipped", invoice["run_message"] or "nothing to send"
        return "pushed", f"{invoice['run_action']}: QuickBooks Id {invoice['qbo_id']}"
    if invoice["run_outcome"] == "error":
        if invoice["queue_status"] == "dead":
            return "dead", f"{invoice['run_message']} — {retry}"
        return "failed", f"{invoice['run_message']} — retried automatically"
    if invoice["queue_status"] == "dead":
        return "dead", f"{invoice['queue_error']} — {retry}"
    if invoice["queue_status"] in ("pending", "in_progress"):
        return "waiting", "queued behind an unfinished push of the same invoice; not pushed by this run"
    if invoice["qbo_id"] is not None:
        synced = f", synced {invoice['synced_at']:%Y-%m-%d %H:%M} UTC" if invoice["synced_at"] else ""
        return "already synced", f"QuickBooks Id {invoice['qbo_id']}{synced}"
    return "not queued", f"status {invoice['status']}, sync status {invoice['sync_status']}: nothing to push"
