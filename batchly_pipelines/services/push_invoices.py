"""Pushing invoices: validation, the DocNumber guard, creates, and voids (of void invoices and of corrected ones).

An invoice is immutable once in QuickBooks: its fingerprint is stored in the link's base at push time and any later
edit is refused. A correction (``replaces_invoice_id``) is created first, checkpointed, then the invoice it replaces
is voided; the correction's queue row is acknowledged only after the void, so a crash in between resumes with the
void. Before creating, QuickBooks is asked which DocNumbers of the chunk it already holds: those are linked, never
created twice, even when a previous run died after QuickBooks had written them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from batchly_pipelines.quickbooks import query as q
from batchly_pipelines.quickbooks.client import WriteOp
from batchly_pipelines.quickbooks.errors import QboError, StaleObjectError
from batchly_pipelines.services.push_records import (
    Failed,
    Outcome,
    PushContext,
    Pushed,
    describe,
    load_invoice_lines,
    load_rows,
)
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.sync_state import SyncState, load_states
from batchly_pipelines.sync.mapping import invoice_to_qbo, to_money
from batchly_pipelines.sync.requestids import request_id
from batchly_pipelines.sync.validation import IMMUTABLE_MESSAGE, invoice_fingerprint, validate_invoice

VOID_ROUNDS = 2  # a stale SyncToken on a void is retried once with the current one


@dataclass(frozen=True)
class _Create:
    invoice: Mapping[str, Any]
    lines: Sequence[Mapping[str, Any]]
    fingerprint: str
    customer_qbo_id: str
    item_qbo_ids: Mapping[int, str]
    replaces_doc_number: str | None
    owed_void: _Void | None  # a correction voids the invoice it replaces once it is in QuickBooks


@dataclass(frozen=True)
class _Void:
    """Void ``target`` in QuickBooks on behalf of ``owner`` (itself, or the correction that replaces it)."""

    target: int
    owner: int
    state: SyncState


class _Snapshot:
    """The Batchly rows a chunk of invoices needs, read in one connection."""

    def __init__(self, ctx: PushContext, ids: Sequence[int]) -> None:
        org = ctx.organization_id
        with ctx.engine.connect() as conn:
            self.invoices = load_rows(conn, "invoice", ids)
            self.lines = load_invoice_lines(conn, self.invoices)
            replaced = {inv["replaces_invoice_id"] for inv in self.invoices.values()} - {None}
            self.replaced = load_rows(conn, "invoice", replaced)
            self.states = {
                st.entity_id: st for st in load_states(conn, org, "invoice", entity_ids=[*ids, *replaced])
            }
            self.customers = load_rows(
                conn, "customer", {inv["customer_id"] for inv in self.invoices.values()}
            )
            item_ids = {line["item_id"] for lines in self.lines.values() for line in lines}
            self.items = load_rows(conn, "item", item_ids)
            inv = s.invoices.c
            self.replaced_by = dict(
                conn.execute(
                    sa.select(inv.replaces_invoice_id, inv.id).where(inv.replaces_invoice_id.in_(list(ids)))
                ).all()
            )


class InvoicePusher:
    """Pushes chunks of invoices for one organisation (thread-safe)."""

    def __init__(self, ctx: PushContext) -> None:
        self.ctx = ctx

    def push(self, ids: Sequence[int]) -> list[Outcome]:
        """Push these invoices (≤ 30): creates or links, checkpointed, then voids. Returns every outcome."""
        snap = _Snapshot(self.ctx, ids)
        outcomes: list[Outcome] = []
        creates: list[_Create] = []
        voids: list[_Void] = []
        for invoice_id in ids:
            decided = self._decide(snap, invoice_id, creates, voids)
            if decided is not None:
                outcomes.append(decided)
        created = self._create(creates) if creates else []
        self.ctx.checkpoint([*outcomes, *created])
        owed = {create.invoice["id"]: create.owed_void for create in creates}
        voids += [void for o in created if isinstance(o, Pushed) and (void := owed[o.entity_id]) is not None]
        voided = self._void(voids) if voids else []
        self.ctx.checkpoint(voided)
        return [*outcomes, *created, *voided]

    def _decide(
        self, snap: _Snapshot, invoice_id: int, creates: list[_Create], voids: list[_Void]
    ) -> Outcome | None:
        """What to do with one invoice: an outcome now, or a create / void to send (then ``None``)."""
        invoice = snap.invoices.get(invoice_id)
        if invoice is None:
            return Pushed("invoice", invoice_id, "skip", message="deleted in Batchly")
        lines = snap.lines.get(invoice_id, [])
        state = snap.states.get(invoice_id)
        if invoice["status"] == "draft":
            return Pushed("invoice", invoice_id, "skip", message="draft invoices are not pushed")
        if invoice["status"] == "void":
            if state is None or invoice["sync_status"] == "voided":
                return Pushed("invoice", invoice_id, "skip", message="void and not in QuickBooks")
            voids.append(_Void(invoice_id, invoice_id, state))
            return None
        if invoice_id in snap.replaced_by:
            message = f"replaced by invoice {snap.replaced_by[invoice_id]}: never pushed"
            return Pushed("invoice", invoice_id, "skip", message=message)
        fingerprint = invoice_fingerprint(invoice, lines)
        if invoice["qbo_id"] is not None:
            if state is None or state.base.get("fingerprint") != fingerprint:
                message = f"invoice {invoice_id} qbo_id: {IMMUTABLE_MESSAGE}"
                return Failed("invoice", invoice_id, "update", message, retryable=False)
            void = self._replaced_void(snap, invoice)
            if void is None:
                return Pushed("invoice", invoice_id, "skip", message="already in QuickBooks")
            voids.append(void)
            return None
        customer = snap.customers.get(invoice["customer_id"])
        issues = validate_invoice(invoice, lines, customer=customer, items=snap.items)
        if issues:
            message = "; ".join(str(issue) for issue in issues)
            return Failed("invoice", invoice_id, "validate", message, retryable=False, invoice_status="error")
        assert customer is not None  # validation refuses unknown customers
        waiting = [f"customer {customer['id']}"] if customer["qbo_id"] is None else []
        waiting += sorted(
            {f"item {line['item_id']}" for line in lines if snap.items[line["item_id"]]["qbo_id"] is None}
        )
        if waiting:
            message = f"{', '.join(waiting)} not in QuickBooks yet (see their sync log)"
            return Failed("invoice", invoice_id, "create", message, retryable=True)
        item_qbo_ids = {item_id: str(item["qbo_id"]) for item_id, item in snap.items.items()}
        old = snap.replaced.get(invoice["replaces_invoice_id"])
        replaces = old["doc_number"] if old is not None else None
        owed_void = self._replaced_void(snap, invoice)
        creates.append(
            _Create(invoice, lines, fingerprint, str(customer["qbo_id"]), item_qbo_ids, replaces, owed_void)
        )
        return None

    @staticmethod
    def _replaced_void(snap: _Snapshot, invoice: Mapping[str, Any]) -> _Void | None:
        """The void a pushed correction still owes the invoice it replaces, if any."""
        old_id = invoice["replaces_invoice_id"]
        old, state = snap.replaced.get(old_id), snap.states.get(old_id)
        if old is None or state is None or old["sync_status"] == "voided":
            return None
        return _Void(old_id, invoice["id"], state)

    def _create(self, creates: list[_Create]) -> list[Outcome]:
        """The DocNumber guard, then one batch call for the invoices QuickBooks does not have yet."""
        existing = self._existing_doc_numbers([c.invoice["doc_number"] for c in creates])
        outcomes: list[Outcome] = []
        ops: dict[int, _Create] = {}
        for create in creates:
            invoice_id, doc_number = create.invoice["id"], create.invoice["doc_number"]
            found = existing.get(doc_number)
            if found is None:
                ops[invoice_id] = create
            elif _same_invoice(found, create):
                outcomes.append(self._pushed(create, "link", found))
            else:
                message = (
                    f"invoice {invoice_id} doc_number: {doc_number!r} is already used in QuickBooks by invoice "
                    f"Id {found['Id']} (customer {found['CustomerRef']['value']}, total {found.get('TotalAmt')})"
                )
                outcomes.append(Failed("invoice", invoice_id, "create", message, retryable=False))
        writes = [
            WriteOp(
                invoice_id,
                "Invoice",
                "create",
                invoice_to_qbo(
                    create.invoice,
                    create.lines,
                    customer_qbo_id=create.customer_qbo_id,
                    item_qbo_ids=create.item_qbo_ids,
                    replaces_doc_number=create.replaces_doc_number,
                ),
                request_id(
                    "create", "invoice", f"{self.ctx.organization_id}:{invoice_id}", create.fingerprint
                ),
            )
            for invoice_id, create in ops.items()
        ]
        for result in self.ctx.client.write_batch(writes) if writes else []:
            create = ops[int(str(result.key))]
            if result.ok and result.entity_obj is not None:
                outcomes.append(self._pushed(create, "create", result.entity_obj))
            else:
                error = result.error or QboError("no answer for this write")
                outcomes.append(
                    Failed("invoice", create.invoice["id"], "create", describe(error), error.retryable)
                )
        return outcomes

    def _pushed(self, create: _Create, action: str, obj: Mapping[str, Any]) -> Pushed:
        return Pushed(
            "invoice",
            create.invoice["id"],
            action,
            qbo_obj=obj,
            base={"fingerprint": create.fingerprint},
            invoice_status="synced",
            hold=create.owed_void is not None,
        )

    def _existing_doc_numbers(self, doc_numbers: list[str]) -> dict[str, dict[str, Any]]:
        """QuickBooks invoices holding any of these DocNumbers (one query)."""
        where = [q.condition("DocNumber", "IN", doc_numbers)]
        rows = self.ctx.client.query(q.select("Invoice", where, max_results=q.MAX_RESULTS)).rows
        return {str(row["DocNumber"]): row for row in rows}

    def _void(self, voids: list[_Void]) -> list[Outcome]:
        """Void invoices in one batch call; a stale SyncToken is retried with the re-read one."""
        outcomes: list[Outcome] = []
        pending = {void.target: (void, void.state.sync_token) for void in voids}
        for _ in range(VOID_ROUNDS):
            if not pending:
                break
            ops = [
                WriteOp(
                    target,
                    "Invoice",
                    "void",
                    {"Id": void.state.qbo_id, "SyncToken": token},
                    request_id("void", "invoice", f"{self.ctx.organization_id}:{target}", token),
                )
                for target, (void, token) in pending.items()
            ]
            retry: dict[int, tuple[_Void, str]] = {}
            for result in self.ctx.client.write_batch(ops):
                void, _token = pending[int(str(result.key))]
                if result.ok and result.entity_obj is not None:
                    outcomes += self._voided(void, result.entity_obj)
                elif isinstance(result.error, StaleObjectError) and result.current is not None:
                    retry[void.target] = (void, str(result.current["SyncToken"]))
                else:
                    error = result.error or QboError("no answer for this void")
                    outcomes.append(self._void_failed(void, describe(error), error.retryable))
            pending = retry
        outcomes += [
            self._void_failed(void, "QuickBooks kept changing it", True) for void, _ in pending.values()
        ]
        return outcomes

    @staticmethod
    def _voided(void: _Void, obj: Mapping[str, Any]) -> list[Outcome]:
        voided = Pushed(
            "invoice", void.target, "void", qbo_obj=obj, base=void.state.base, invoice_status="voided"
        )
        if void.owner == void.target:
            return [voided]
        message = f"voided invoice {void.target}, which it replaces"
        return [voided, Pushed("invoice", void.owner, "correct", message=message)]

    @staticmethod
    def _void_failed(void: _Void, reason: str, retryable: bool) -> Failed:
        subject = (
            "" if void.owner == void.target else f"could not void invoice {void.target}, which it replaces: "
        )
        return Failed("invoice", void.owner, "void", subject + reason, retryable)


def _same_invoice(found: Mapping[str, Any], create: _Create) -> bool:
    """A QuickBooks invoice with this DocNumber is ours when customer and total agree."""
    total = to_money(create.invoice["total_amount"])
    return (
        str(found["CustomerRef"]["value"]) == create.customer_qbo_id
        and to_money(found.get("TotalAmt")) == total
    )
