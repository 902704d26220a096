"""Pushing invoices: validation, the DocNumber guard, creates, and voids (of void invoices and of corrected ones).

An invoice is immutable once in QuickBooks: its fingerprint is stored in the link's base at push time and any later
edit is refused. A correction (``replaces_invoice_id``) is created first, checkpointed, then every invoice of the
chain it replaces that reached QuickBooks is voided; the correction's queue row is acknowledged only after those
voids, so a crash in between resumes with them. An invoice is superseded (acknowledged without being sent) only by an
open replacement that is in QuickBooks or is being created in the same chunk; a draft, void or refused replacement
supersedes nothing.

Before creating or voiding, QuickBooks is asked which DocNumbers of the chunk it already holds (one query, with the
trimmed DocNumber the body sends). An invoice to create is linked to QuickBooks' invoice only when everything the
body would send agrees (customer, total, dates, lines); any other holder of its DocNumber fails it for review. An
invoice to void, or replaced by a correction, that Batchly never recorded as pushed (its create was applied but the
checkpoint lost) is linked to QuickBooks' invoice with its DocNumber and customer, then voided.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchly_pipelines.quickbooks import query as q
from batchly_pipelines.quickbooks.client import WriteOp
from batchly_pipelines.quickbooks.errors import QboError, StaleObjectError
from batchly_pipelines.quickbooks.wire import request_id
from batchly_pipelines.rules.mapping import (
    invoice_doc_number,
    invoice_to_qbo,
    to_decimal,
    to_money,
)
from batchly_pipelines.rules.validation import IMMUTABLE_MESSAGE, invoice_fingerprint, validate_invoice
from batchly_pipelines.services.push.checkpoint import (
    Failed,
    Outcome,
    PushContext,
    Pushed,
    describe,
    link_state,
)
from batchly_pipelines.store.push_rows import load_invoice_lines, load_replacements, load_rows
from batchly_pipelines.store.sync_state import SyncState, load_states

VOID_ROUNDS = 2  # a stale SyncToken on a void is retried once with the current one
MAX_CHAIN = 100  # corrections of corrections followed at most this deep (and never round a cycle)


@dataclass(frozen=True)
class _Create:
    invoice: Mapping[str, Any]
    fingerprint: str
    doc_number: str
    body: Mapping[str, Any]
    replaces: tuple[int, ...]  # the chain of invoices it supersedes, nearest first


@dataclass
class _Void:
    """Void ``target`` in QuickBooks on behalf of ``owners`` (itself, and/or corrections that replace it)."""

    target: int
    state: SyncState
    owners: list[int]


@dataclass
class _Found:
    """QuickBooks invoices holding the chunk's DocNumbers, and which of them are linked to a Batchly invoice."""

    by_doc: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    linked: dict[str, int] = field(default_factory=dict)  # QuickBooks Id → Batchly invoice id
    taken: set[str] = field(default_factory=set)  # linked by this chunk

    def free(self, doc_number: str | None) -> list[dict[str, Any]]:
        rows = self.by_doc.get(doc_number, []) if doc_number is not None else []
        return [row for row in rows if str(row["Id"]) not in self.linked and str(row["Id"]) not in self.taken]


@dataclass
class _Plan:
    """What one chunk decided before anything is sent."""

    outcomes: list[Outcome] = field(default_factory=list)
    creates: list[_Create] = field(default_factory=list)
    own_voids: list[int] = field(default_factory=list)  # void in Batchly
    owed: dict[int, tuple[int, ...]] = field(default_factory=dict)  # pushed correction → chain to void
    deferred: dict[int, list[int]] = field(default_factory=dict)  # invoice → its replacements in this chunk


class _Snapshot:
    """The Batchly rows a chunk of invoices needs, read in one connection."""

    def __init__(self, ctx: PushContext, ids: Sequence[int]) -> None:
        org = ctx.organization_id
        with ctx.engine.connect() as conn:
            self.invoices = load_rows(conn, "invoice", ids)
            self.rows = dict(self.invoices)  # the chunk and every invoice its corrections replace
            frontier = {row["replaces_invoice_id"] for row in self.rows.values()} - {None} - set(self.rows)
            for _ in range(MAX_CHAIN):
                if not frontier:
                    break
                found = load_rows(conn, "invoice", frontier)
                self.rows.update(found)
                frontier = {row["replaces_invoice_id"] for row in found.values()} - {None} - set(self.rows)
            self.lines = load_invoice_lines(conn, self.rows)
            self.states = {st.entity_id: st for st in load_states(conn, org, "invoice", entity_ids=self.rows)}
            self.customers = load_rows(conn, "customer", {row["customer_id"] for row in self.rows.values()})
            item_ids = {line["item_id"] for lines in self.lines.values() for line in lines}
            self.items = load_rows(conn, "item", item_ids)
            self.replacements = load_replacements(conn, ids)  # by the invoice they replace

    def chain(self, invoice_id: int) -> tuple[int, ...]:
        """The invoices ``invoice_id`` supersedes: the one it replaces, the one that one replaces, and so on."""
        chain: list[int] = []
        current = self.rows[invoice_id]["replaces_invoice_id"]
        while current is not None and current in self.rows and current != invoice_id and current not in chain:
            chain.append(current)
            current = self.rows[current]["replaces_invoice_id"]
        return tuple(chain)

    def customer_qbo_id(self, invoice_id: int) -> str | None:
        customer = self.customers.get(self.rows[invoice_id]["customer_id"])
        return None if customer is None or customer["qbo_id"] is None else str(customer["qbo_id"])

    def fingerprint(self, invoice_id: int) -> str:
        return invoice_fingerprint(self.rows[invoice_id], self.lines.get(invoice_id, []))


class InvoicePusher:
    """Pushes chunks of invoices for one organisation (thread-safe)."""

    def __init__(self, ctx: PushContext) -> None:
        self.ctx = ctx

    def push(self, ids: Sequence[int]) -> list[Outcome]:
        """Push these invoices (≤ 30): creates or links, checkpointed, then voids. Returns every outcome."""
        snap = _Snapshot(self.ctx, ids)
        plan = _Plan()
        for invoice_id in ids:
            decided = self._decide(snap, invoice_id, plan)
            if decided is not None:
                plan.outcomes.append(decided)
        found = self._lookup(snap, plan)
        links = self._links(snap, plan, found)
        voids: dict[int, _Void] = {}
        for target in plan.own_voids:
            state = snap.states.get(target) or links.get(target)
            if state is None:
                plan.outcomes.append(Pushed("invoice", target, "skip", message="void and not in QuickBooks"))
            else:
                _owe(voids, target, state, target)
        owed = {owner: self._owed(snap, chain, links) for owner, chain in plan.owed.items()}
        for owner, targets in owed.items():
            if not targets:
                plan.outcomes.append(Pushed("invoice", owner, "skip", message="already in QuickBooks"))
            for target, state in targets:
                _owe(voids, target, state, owner)
        owed_by_creates = {
            create.invoice["id"]: self._owed(snap, create.replaces, links) for create in plan.creates
        }
        created = self._create(plan.creates, found, owed_by_creates) if plan.creates else []
        pushed = {o.entity_id for o in created if isinstance(o, Pushed)}
        settled = self._settle_deferred(plan.deferred, pushed)
        self.ctx.checkpoint([*plan.outcomes, *created, *settled])
        for owner in sorted(pushed):
            for target, state in owed_by_creates[owner]:
                _owe(voids, target, state, owner)
        voided = self._void(list(voids.values())) if voids else []
        self.ctx.checkpoint(voided)
        return [*plan.outcomes, *created, *settled, *voided]

    def _decide(self, snap: _Snapshot, invoice_id: int, plan: _Plan) -> Outcome | None:
        """What to do with one invoice: an outcome now, or a create / void / wait noted in ``plan`` (then ``None``)."""
        invoice = snap.invoices.get(invoice_id)
        if invoice is None:
            return Pushed("invoice", invoice_id, "skip", message="deleted in Batchly")
        lines = snap.lines.get(invoice_id, [])
        if invoice["status"] == "draft":
            return Pushed("invoice", invoice_id, "skip", message="draft invoices are not pushed")
        if invoice["status"] == "void":
            if invoice["sync_status"] == "voided":
                return Pushed("invoice", invoice_id, "skip", message="already voided in QuickBooks")
            plan.own_voids.append(invoice_id)  # linked, or looked up by DocNumber first
            return None
        fingerprint = invoice_fingerprint(invoice, lines)
        if invoice["qbo_id"] is not None:
            state = snap.states.get(invoice_id)
            if state is None or state.base.get("fingerprint") != fingerprint:
                message = f"invoice {invoice_id} qbo_id: {IMMUTABLE_MESSAGE}"
                return Failed("invoice", invoice_id, "update", message, retryable=False)
            plan.owed[invoice_id] = snap.chain(invoice_id)  # voids it may still owe (none: skipped)
            return None
        superseded = self._superseded(snap, invoice_id, plan)
        if superseded is not None or invoice_id in plan.deferred:
            return superseded
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
        doc_number = invoice_doc_number(invoice)
        assert doc_number is not None  # validation refuses a blank DocNumber
        item_qbo_ids = {item_id: str(item["qbo_id"]) for item_id, item in snap.items.items()}
        chain = snap.chain(invoice_id)
        body = invoice_to_qbo(
            invoice,
            lines,
            customer_qbo_id=str(customer["qbo_id"]),
            item_qbo_ids=item_qbo_ids,
            replaces_doc_number=snap.rows[chain[0]]["doc_number"] if chain else None,
        )
        plan.creates.append(_Create(invoice, fingerprint, doc_number, body, chain))
        return None

    @staticmethod
    def _superseded(snap: _Snapshot, invoice_id: int, plan: _Plan) -> Outcome | None:
        """An invoice not in QuickBooks that an open replacement supersedes is never sent: acknowledged when the
        replacement is in QuickBooks, decided after the creates when it is in this chunk, otherwise left pending.
        Draft, void and refused (``sync_status = error``) replacements supersede nothing."""
        open_ones = [
            row
            for row in snap.replacements.get(invoice_id, [])
            if row["status"] == "open" and row["sync_status"] != "error"
        ]
        pushed = [row["id"] for row in open_ones if row["qbo_id"] is not None]
        if pushed:
            return Pushed(
                "invoice", invoice_id, "skip", message=f"replaced by invoice {pushed[0]}: never pushed"
            )
        here = [row["id"] for row in open_ones if row["id"] in snap.invoices]
        if here:
            plan.deferred[invoice_id] = here
            return None
        if open_ones:
            message = f"waiting for invoice {open_ones[0]['id']}, which replaces it, to reach QuickBooks"
            return Failed("invoice", invoice_id, "create", message, retryable=True)
        return None

    @staticmethod
    def _settle_deferred(deferred: Mapping[int, list[int]], pushed: set[int]) -> list[Outcome]:
        """Invoices whose replacement (or its replacement, …) reached QuickBooks in this chunk are acknowledged;
        the others stay pending until it does."""
        superseded: dict[int, int] = {}
        progress = True
        while progress:
            progress = False
            for invoice_id, replacements in deferred.items():
                if invoice_id in superseded:
                    continue
                by = next((r for r in replacements if r in pushed or r in superseded), None)
                if by is not None:
                    superseded[invoice_id] = by
                    progress = True
        outcomes: list[Outcome] = []
        for invoice_id, replacements in deferred.items():
            if invoice_id in superseded:
                message = f"replaced by invoice {superseded[invoice_id]}: never pushed"
                outcomes.append(Pushed("invoice", invoice_id, "skip", message=message))
            else:
                message = f"waiting for invoice {replacements[0]}, which replaces it, to reach QuickBooks"
                outcomes.append(Failed("invoice", invoice_id, "create", message, retryable=True))
        return outcomes

    def _lookup(self, snap: _Snapshot, plan: _Plan) -> _Found:
        """One query for every DocNumber the chunk may find in QuickBooks: its creates, and the invoices to void
        (void ones, the chains of corrections) that Batchly has no link for."""
        docs = {create.doc_number for create in plan.creates}
        for target in _unlinked_voids(snap, plan):
            doc_number = invoice_doc_number(snap.rows[target])
            if doc_number is not None:
                docs.add(doc_number)
        found = _Found()
        if not docs:
            return found
        where = [q.condition("DocNumber", "IN", sorted(docs))]
        for row in self.ctx.client.query(q.select("Invoice", where, max_results=q.MAX_RESULTS)).rows:
            doc_number = str(row.get("DocNumber") or "").strip()
            found.by_doc.setdefault(doc_number, []).append(row)
        qbo_ids = [str(row["Id"]) for rows in found.by_doc.values() for row in rows]
        if qbo_ids:
            with self.ctx.engine.connect() as conn:
                states = load_states(conn, self.ctx.organization_id, "invoice", qbo_ids=qbo_ids)
            found.linked = {st.qbo_id: st.entity_id for st in states}
        return found

    def _links(self, snap: _Snapshot, plan: _Plan, found: _Found) -> dict[int, SyncState]:
        """Links for invoices to void that QuickBooks holds but Batchly never recorded: the unlinked QuickBooks
        invoice with the same DocNumber and customer."""
        links: dict[int, SyncState] = {}
        for target in _unlinked_voids(snap, plan):
            if target in links:
                continue
            customer = snap.customer_qbo_id(target)
            doc_number = invoice_doc_number(snap.rows[target])
            match = next(
                (row for row in found.free(doc_number) if str(row["CustomerRef"]["value"]) == customer), None
            )
            if customer is None or match is None:
                continue
            found.taken.add(str(match["Id"]))
            base = {"fingerprint": snap.fingerprint(target)}
            links[target] = link_state(self.ctx.organization_id, ("invoice", target), match, base)
        return links

    @staticmethod
    def _owed(
        snap: _Snapshot, chain: Sequence[int], links: Mapping[int, SyncState]
    ) -> list[tuple[int, SyncState]]:
        """The voids a correction owes: every invoice of its chain in QuickBooks (linked or found) not voided yet."""
        owed = []
        for target in chain:
            state = snap.states.get(target) or links.get(target)
            if state is not None and snap.rows[target]["sync_status"] != "voided":
                owed.append((target, state))
        return owed

    def _create(
        self, creates: list[_Create], found: _Found, owed: Mapping[int, Sequence[tuple[int, SyncState]]]
    ) -> list[Outcome]:
        """The DocNumber guard, then one batch call for the invoices QuickBooks does not have yet."""
        outcomes: list[Outcome] = []
        ops: dict[int, _Create] = {}
        for create in creates:
            invoice_id, doc_number = create.invoice["id"], create.doc_number
            holders = found.by_doc.get(doc_number, [])
            match = next((row for row in found.free(doc_number) if not _differences(row, create)), None)
            if match is not None:
                found.taken.add(str(match["Id"]))
                outcomes.append(self._pushed(create, "link", match, hold=bool(owed[invoice_id])))
            elif holders:
                outcomes.append(self._held_elsewhere(create, holders[0], found))
            else:
                ops[invoice_id] = create
        writes = [
            WriteOp(
                invoice_id,
                "Invoice",
                "create",
                dict(create.body),
                request_id(
                    "create", "invoice", f"{self.ctx.organization_id}:{invoice_id}", create.fingerprint
                ),
            )
            for invoice_id, create in ops.items()
        ]
        for result in self.ctx.client.write_batch(writes) if writes else []:
            create = ops[int(str(result.key))]
            if result.ok and result.entity_obj is not None:
                hold = bool(owed[create.invoice["id"]])
                outcomes.append(self._pushed(create, "create", result.entity_obj, hold=hold))
            else:
                error = result.error or QboError("no answer for this write")
                outcomes.append(
                    Failed("invoice", create.invoice["id"], "create", describe(error), error.retryable)
                )
        return outcomes

    @staticmethod
    def _held_elsewhere(create: _Create, holder: Mapping[str, Any], found: _Found) -> Failed:
        """QuickBooks holds the DocNumber in an invoice that is not this one (or no longer looks like it): review."""
        invoice_id, doc_number, qbo_id = create.invoice["id"], create.doc_number, str(holder["Id"])
        owner = found.linked.get(qbo_id)
        if owner is not None:
            why = f"it is linked to Batchly invoice {owner}"
        else:
            differences = _differences(holder, create) or [
                "it is already linked by another invoice of this push"
            ]
            why = "it differs from this invoice: " + "; ".join(differences)
        message = (
            f"invoice {invoice_id} doc_number: QuickBooks already holds DocNumber {doc_number!r} in invoice Id "
            f"{qbo_id} and {why}. Not linked and not created again: review it in QuickBooks (void it there or "
            "give this invoice another number), then retry"
        )
        return Failed("invoice", invoice_id, "create", message, retryable=False, invoice_status="error")

    @staticmethod
    def _pushed(create: _Create, action: str, obj: Mapping[str, Any], *, hold: bool) -> Pushed:
        return Pushed(
            "invoice",
            create.invoice["id"],
            action,
            qbo_obj=obj,
            base={"fingerprint": create.fingerprint},
            invoice_status="synced",
            hold=hold,
        )

    def _void(self, voids: list[_Void]) -> list[Outcome]:
        """Void invoices in one batch call; a stale SyncToken is retried with the re-read one."""
        done: dict[int, Mapping[str, Any]] = {}
        failed: dict[int, tuple[str, bool]] = {}
        by_target = {void.target: void for void in voids}
        pending = {void.target: void.state.sync_token for void in voids}
        for _ in range(VOID_ROUNDS):
            if not pending:
                break
            ops = [
                WriteOp(
                    target,
                    "Invoice",
                    "void",
                    {"Id": by_target[target].state.qbo_id, "SyncToken": token},
                    request_id("void", "invoice", f"{self.ctx.organization_id}:{target}", token),
                )
                for target, token in pending.items()
            ]
            retry: dict[int, str] = {}
            for result in self.ctx.client.write_batch(ops):
                target = int(str(result.key))
                if result.ok and result.entity_obj is not None:
                    done[target] = result.entity_obj
                elif isinstance(result.error, StaleObjectError) and result.current is not None:
                    retry[target] = str(result.current["SyncToken"])
                else:
                    error = result.error or QboError("no answer for this void")
                    failed[target] = (describe(error), error.retryable)
            pending = retry
        failed.update({target: ("QuickBooks kept changing it", True) for target in pending})
        outcomes: list[Outcome] = []
        owners: dict[int, list[int]] = {}
        for void in voids:
            if void.target in done:
                obj = done[void.target]
                outcomes.append(
                    Pushed(
                        "invoice",
                        void.target,
                        "void",
                        qbo_obj=obj,
                        base=void.state.base,
                        invoice_status="voided",
                    )
                )
            elif void.target in void.owners:
                reason, retryable = failed[void.target]
                outcomes.append(Failed("invoice", void.target, "void", reason, retryable))
            for owner in void.owners:
                if owner != void.target:
                    owners.setdefault(owner, []).append(void.target)
        for owner, targets in owners.items():
            bad = [(target, failed[target]) for target in targets if target in failed]
            if bad:
                message = "; ".join(
                    f"could not void invoice {target}, which it replaces: {reason}"
                    for target, (reason, _) in bad
                )
                outcomes.append(Failed("invoice", owner, "void", message, all(r for _, (_, r) in bad)))
            else:
                voided = ", ".join(str(target) for target in targets)
                message = f"voided invoice {voided}, which it replaces"
                outcomes.append(Pushed("invoice", owner, "correct", message=message))
        return outcomes


def _unlinked_voids(snap: _Snapshot, plan: _Plan) -> list[int]:
    """Invoices to void (void ones, the chains of corrections) that Batchly has no link for and has not voided."""
    chains = [*plan.owed.values(), *(create.replaces for create in plan.creates)]
    targets = [*plan.own_voids, *(target for chain in chains for target in chain)]
    return [t for t in targets if t not in snap.states and snap.rows[t]["sync_status"] != "voided"]


def _owe(voids: dict[int, _Void], target: int, state: SyncState, owner: int) -> None:
    void = voids.setdefault(target, _Void(target, state, []))
    if owner not in void.owners:
        void.owners.append(owner)


def _differences(found: Mapping[str, Any], create: _Create) -> list[str]:
    """How QuickBooks' invoice differs from what Batchly would send: customer, total, dates, lines (item,
    quantity, amount). Empty when it is this invoice."""
    body = create.body
    differences = []
    customer = str((found.get("CustomerRef") or {}).get("value"))
    if customer != body["CustomerRef"]["value"]:
        differences.append(f"customer {customer} in QuickBooks, {body['CustomerRef']['value']} here")
    total, ours = to_money(found.get("TotalAmt")), to_money(create.invoice["total_amount"])
    if total != ours:
        differences.append(f"total {total} in QuickBooks, {ours} here")
    for key in ("TxnDate", "DueDate"):
        if key in body and str(found.get(key)) != body[key]:
            differences.append(f"{key} {found.get(key)} in QuickBooks, {body[key]} here")
    theirs, mine = _line_keys(found.get("Line") or []), _line_keys(body["Line"])
    if theirs != mine:
        differences.append(f"lines (item, quantity, amount) {theirs} in QuickBooks, {mine} here")
    return differences


def _line_keys(lines: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    keys = []
    for line in lines:
        if line.get("DetailType") != "SalesItemLineDetail":
            continue
        detail = line.get("SalesItemLineDetail") or {}
        quantity = detail.get("Qty")
        keys.append(
            (
                str((detail.get("ItemRef") or {}).get("value")),
                "" if quantity is None else str(to_decimal(quantity).normalize()),
                str(to_money(line.get("Amount"))),
            )
        )
    return sorted(keys)
