"""Pushing invoices: validation, the DocNumber guard, voids first, then creates.

An invoice is immutable once in QuickBooks: its fingerprint and the invoice it replaces are stored in the link's base
at push time, and a later edit is refused out loud (dead letter, ``sync_status = error``, a message naming the field)
without sending anything: set back to draft, reopened after a void, ``replaces_invoice_id`` set or changed, any other
edit. Undoing the edit makes it ``synced`` again.

Nothing is created while what it supersedes is still open. Every chunk first voids, in one batch call, what must not
stay open — invoices set to void, every invoice of a correction's chain (the one it replaces, the one that one
replaces, …) and *lost copies*: invoices an earlier push created whose answer never arrived, of Batchly invoices since
renumbered, set to draft or superseded — checkpoints that, and only then creates the invoices whose voids all
succeeded. A void QuickBooks must not be asked for (an invoice with payments applied) is refused up front with the
reason, and what waited for it (a correction) goes to the dead letter with it, the original left as it is; a void
that fails transiently keeps them pending.

The DocNumber guard asks QuickBooks, in one query, for the chunk's DocNumbers and every DocNumber its invoices were
ever sent with (``qbo_invoice_sends``, recorded before every create leaves the process), compared without letter case
as QuickBooks compares them. An invoice to create is linked to QuickBooks' invoice with its DocNumber only when
everything the body would send agrees (customer, total, dates, lines); any other holder of its DocNumber fails it for
review. A copy of an earlier send with another DocNumber and the same customer is a lost copy: voided first.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from typing import Any

from batchly_pipelines.quickbooks import query as q
from batchly_pipelines.quickbooks.client import AnswerLost, WriteOp, WriteResult
from batchly_pipelines.quickbooks.errors import QboError, StaleObjectError
from batchly_pipelines.quickbooks.wire import BATCH_MAX, request_id
from batchly_pipelines.rules.invoices import applied_payments, describe_payments, doc_number_key, is_voided
from batchly_pipelines.rules.mapping import invoice_doc_number, invoice_to_qbo, to_decimal, to_money
from batchly_pipelines.rules.validation import (
    IMMUTABLE_MESSAGE,
    invoice_fingerprint,
    validate_invoice,
    validate_pushed_invoice,
)
from batchly_pipelines.services.push.checkpoint import (
    Failed,
    Outcome,
    PushContext,
    Pushed,
    RecordKey,
    describe,
    link_state,
)
from batchly_pipelines.store.invoice_sends import InvoiceSend, load_sends, record_sends
from batchly_pipelines.store.push_rows import load_invoice_lines, load_replacements, load_rows
from batchly_pipelines.store.sync_state import SyncState, load_states

TOP_UPS = 2  # a chunk short of 30 writes takes more invoices of the push at most this often
VOID_ROUNDS = 2  # a stale SyncToken on a void is retried once with the current one
MAX_CHAIN = 100  # corrections of corrections followed at most this deep (and never round a cycle)
QboInvoice = Mapping[str, Any]
TopUp = Callable[[int], list[int]]  # up to n more invoices for a chunk short of writes


def _base(fingerprint: str, invoice: Mapping[str, Any]) -> dict[str, Any]:
    """What a link records about the invoice it pushed: what it sent and what it replaces."""
    return {"fingerprint": fingerprint, "replaces_invoice_id": invoice["replaces_invoice_id"]}


@dataclass(frozen=True)
class _Create:
    invoice: Mapping[str, Any]
    fingerprint: str
    doc_number: str
    body: Mapping[str, Any]
    replaces: tuple[int, ...]  # the chain of invoices it supersedes, nearest first
    # the QuickBooks Ids of the copies this invoice was sent as and that are voided now (lost creates voided when it
    # was set to draft, renumbered, voided): part of the create's request id, so a create after such a void is a new
    # request — the same id would have QuickBooks replay its stored answer, the voided copy as it was created
    voided_copies: tuple[str, ...] = ()

    @property
    def id(self) -> int:
        return int(self.invoice["id"])

    @property
    def generation(self) -> str:
        """What makes the create's request id new after another copy was voided (and only then: a retry after a lost
        answer is the same request; none voided, the request id is what it always was)."""
        return "".join(f":voided-{qbo_id}" for qbo_id in self.voided_copies)

    @property
    def key(self) -> str:
        return doc_number_key(self.doc_number)


# how a void relates to an invoice waiting for it
OWN, REPLACED, LOST_COPY = "own", "replaced", "lost copy"


@dataclass
class _Void:
    """QuickBooks invoice ``obj`` (as QuickBooks holds it now) that must be void before its ``owners`` go on: Batchly's
    invoice ``target`` (``state`` links them), or a lost copy that an earlier push of ``copy_of`` created."""

    obj: QboInvoice
    target: int | None = None
    state: SyncState | None = None
    copy_of: int | None = None
    owners: dict[int, str] = field(default_factory=dict)  # Batchly invoice → OWN | REPLACED | LOST_COPY

    @property
    def qbo_id(self) -> str:
        return str(self.obj["Id"])

    def __str__(self) -> str:
        if self.target is not None:
            return f"invoice {self.target} (QuickBooks Id {self.qbo_id})"
        return (
            f"QuickBooks invoice Id {self.qbo_id} (DocNumber {self.obj.get('DocNumber')!r}), a copy an earlier push "
            f"of invoice {self.copy_of} created whose answer was lost"
        )


@dataclass
class _Found:
    """What QuickBooks holds for the chunk: invoices by DocNumber (as QuickBooks compares them), the linked invoices
    to void as read now, and which of them are linked to a Batchly invoice."""

    by_key: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    current: dict[str, dict[str, Any]] = field(default_factory=dict)  # QuickBooks Id → invoice
    linked: dict[str, int] = field(default_factory=dict)  # QuickBooks Id → Batchly invoice id
    taken: set[str] = field(default_factory=set)  # linked by this chunk

    def free(self, key: str | None) -> list[dict[str, Any]]:
        rows = self.by_key.get(key, []) if key is not None else []
        return [row for row in rows if str(row["Id"]) not in self.linked and str(row["Id"]) not in self.taken]


@dataclass
class _Plan:
    """What one chunk decided before anything is sent."""

    outcomes: list[Outcome] = field(default_factory=list)
    creates: list[_Create] = field(default_factory=list)
    own_voids: list[int] = field(default_factory=list)  # void in Batchly
    retired: dict[int, Outcome] = field(
        default_factory=dict
    )  # never to be open (draft, superseded) but sent before
    deferred: dict[int, list[int]] = field(default_factory=dict)  # invoice → its replacements in this chunk
    # the customers and items the push found in the dead letter when the chunk began: record → its error
    dead_letters: dict[RecordKey, str] = field(default_factory=dict)


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
            # by the invoice they replace, and their replacements in turn (a correction corrected again)
            self.replacements = load_replacements(conn, ids)
            frontier = {row["id"] for rows in self.replacements.values() for row in rows}
            for _ in range(MAX_CHAIN):
                frontier -= set(self.replacements) | set(ids)
                if not frontier:
                    break
                found_next = load_replacements(conn, frontier)
                self.replacements.update(found_next)
                frontier = {row["id"] for rows in found_next.values() for row in rows}
            self.sends = load_sends(conn, ctx.client.realm_id, {*self.rows, *ids})  # deleted ones too

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

    def voided(self, invoice_id: int) -> bool:
        """Voided in QuickBooks, as far as Batchly recorded."""
        state = self.states.get(invoice_id)
        return self.rows[invoice_id]["sync_status"] == "voided" or bool(state and state.base.get("voided"))

    def sent_as(self, invoice_id: int) -> set[tuple[str, str]]:
        """Every (DocNumber key, QuickBooks customer) the invoice was ever sent with."""
        return {(send.doc_key, send.customer_qbo_id) for send in self.sends.get(invoice_id, [])}


class InvoicePusher:
    """Pushes chunks of invoices for one organisation (thread-safe).

    Chunks run side by side, each from its rows' snapshot to its checkpoint. A correction is never decided while
    an invoice of its chain is in another chunk of this push: that chunk read its rows before the correction
    existed and may be about to create the original, which QuickBooks does not hold yet, so there would be nothing
    to void. The correction waits (no attempt counted) until that chunk is checkpointed, then voids it first.
    """

    def __init__(self, ctx: PushContext) -> None:
        self.ctx = ctx
        # invoices of the chunks under way, from their snapshot to their checkpoint (or to a decision that nothing
        # of them leaves with that chunk)
        self._working: Counter[int] = Counter()
        self._working_lock = threading.Lock()
        # customers and items of the push's rounds that are in the dead letter (see :meth:`dead_lettered`)
        self._dead_letters: dict[RecordKey, str] = {}

    def push(self, ids: Sequence[int], more: TopUp | None = None) -> list[Outcome]:
        """Push these invoices (≤ 30): voids first and checkpointed, then creates or links. Returns every outcome.

        ``more(n)`` hands over up to ``n`` more invoices of the push (claimed, not started by another chunk): a chunk
        whose invoices will carry fewer than 30 writes — some voided, superseded, refused or waiting since they were
        claimed — takes that many more, up to :data:`TOP_UPS` times, so its batch call (the company's scarcest
        budget) goes out full."""
        ids = list(ids)
        working = set(ids)
        with self._working_lock:
            self._working.update(working)
        try:
            return self._push(ids, working, more)
        finally:
            self._release(working)

    def dead_lettered(self, records: Mapping[RecordKey, str | None]) -> None:
        """What the push found of these customers and items: in the dead letter (its error), or not (``None``). An
        invoice waiting for one in the dead letter is parked behind it, naming it, instead of being claimed again
        every few seconds."""
        with self._working_lock:
            for key, error in records.items():
                if error is None:
                    self._dead_letters.pop(key, None)
                else:
                    self._dead_letters[key] = error

    def _release(self, ids: set[int]) -> None:
        with self._working_lock:
            self._working.subtract(ids)
            self._working += Counter()  # drop the zeros

    def _elsewhere(self, invoice_ids: Iterable[int], chunk: Iterable[int]) -> list[int]:
        """Those of ``invoice_ids`` that another chunk of this push is working on."""
        own = set(chunk)
        with self._working_lock:
            return [i for i in invoice_ids if i not in own and self._working[i] > 0]

    def _push(self, ids: list[int], working: set[int], more: TopUp | None) -> list[Outcome]:
        for top_up in range(TOP_UPS + 1):
            snap, plan, answered = self._plan(ids)
            short = BATCH_MAX - _writes_planned(snap, plan)
            extra = more(short) if more is not None and short > 0 and top_up < TOP_UPS else []
            if not extra:
                break
            with self._working_lock:  # decided again with them, from a snapshot that holds them too
                self._working.update(extra)
            working.update(extra)
            ids.extend(extra)
        # nothing of these leaves with this chunk (skipped, refused, waiting): a correction of one of them need not
        # wait for it — it is not created by this chunk (two chunks waiting for each other would wait for ever)
        if answered:
            working -= answered
            self._release(answered)
        found = self._lookup(snap, plan)
        guarded = self._guard(snap, plan, found)
        voids: dict[str, _Void] = {}
        for create, _ in guarded:
            for target in create.replaces:
                if not snap.voided(target):
                    _owe(voids, self._copies(snap, found, target), create.id, REPLACED)
        for target in plan.own_voids:
            copies = self._copies(snap, found, target)
            if not any(
                copy.target == target for copy in copies
            ):  # acknowledged once its lost copies are void
                plan.retired[target] = Pushed("invoice", target, "skip", message="void and not in QuickBooks")
            for copy in copies:
                _owe(voids, [copy], target, OWN if copy.target == target else LOST_COPY)
        for create, _ in guarded:  # after every link was chosen: what is left over is a lost copy
            _owe(voids, self._lost_copies(snap, found, create.id, keep=create.key), create.id, LOST_COPY)
        for invoice_id in plan.retired:
            _owe(voids, self._lost_copies(snap, found, invoice_id, keep=None), invoice_id, LOST_COPY)
        # The voids and the creates go in one batch call (voids first), a batch call being the company's scarcest
        # budget; a create that waits for one of these voids (a correction's original, a lost copy of a renumbered
        # invoice) is not among them: it is created from the next claim, once the void is checkpointed
        creating = {create.id for create, _ in guarded}
        waiting = {
            owner for void in voids.values() if not is_voided(void.obj) for owner in void.owners
        } & creating
        ready = [(create, match) for create, match in guarded if create.id not in waiting]
        links, creates, writes = self._prepare_creates(ready)
        voided, problems, answers = self._void(list(voids.values()), plan, riders=writes)
        created = [*links, *self._created(creates, answers)]
        held = [
            Failed(
                "invoice",
                create.id,
                "wait",
                f"invoice {create.id} waits for {_waited_for(voids, create.id)} to be voided first (sent now); "
                "it is created from the next claim",
                retryable=True,
                sent=False,
                retry_now=True,
            )
            for create, _ in guarded
            if create.id in waiting - problems
        ]
        pushed = {o.entity_id for o in created if isinstance(o, Pushed)}
        settled = self._settle_deferred(plan.deferred, pushed, {outcome.entity_id for outcome in held})
        outcomes = [*voided, *plan.outcomes, *created, *held, *settled]
        self.ctx.checkpoint(outcomes)
        return outcomes

    def _plan(self, ids: Sequence[int]) -> tuple[_Snapshot, _Plan, set[int]]:
        """The chunk's snapshot and what it decided: the plan, and the invoices answered without a write."""
        snap = _Snapshot(self.ctx, ids)
        with self._working_lock:
            plan = _Plan(dead_letters=dict(self._dead_letters))
        answered: set[int] = set()
        for invoice_id in ids:
            decided = self._decide(snap, invoice_id, plan)
            if decided is not None:
                plan.outcomes.append(decided)
                answered.add(invoice_id)
        return snap, plan, answered

    def _decide(self, snap: _Snapshot, invoice_id: int, plan: _Plan) -> Outcome | None:
        """What to do with one invoice: an outcome now, or a create / void / wait noted in ``plan`` (then ``None``)."""
        invoice = snap.invoices.get(invoice_id)
        if invoice is None:
            return self._retire(
                snap, plan, Pushed("invoice", invoice_id, "skip", message="deleted in Batchly")
            )
        lines = snap.lines.get(invoice_id, [])
        if invoice["status"] == "void":
            if snap.voided(invoice_id):
                message = "already voided in QuickBooks"
                voided = Pushed("invoice", invoice_id, "skip", message=message, invoice_status="voided")
                return self._retire(snap, plan, voided)
            plan.own_voids.append(invoice_id)  # linked, or looked up by DocNumber first
            return None
        if invoice["qbo_id"] is not None:
            return self._pushed_before(snap, invoice_id)
        if invoice["status"] == "draft":
            draft = Pushed("invoice", invoice_id, "skip", message="draft invoices are not pushed")
            return self._retire(snap, plan, draft)
        superseded = self._superseded(snap, invoice_id, plan)
        if superseded is not None or invoice_id in plan.deferred:
            return self._retire(snap, plan, superseded) if isinstance(superseded, Pushed) else superseded
        customer = snap.customers.get(invoice["customer_id"])
        issues = validate_invoice(invoice, lines, customer=customer, items=snap.items)
        if issues:
            message = "; ".join(str(issue) for issue in issues)
            return Failed("invoice", invoice_id, "validate", message, retryable=False, invoice_status="error")
        assert customer is not None  # validation refuses unknown customers
        blocked = _dead_lettered_reference(invoice_id, customer, lines, snap.items, plan.dead_letters)
        if blocked is not None:
            return Failed("invoice", invoice_id, "create", blocked, retryable=True, sent=False, parked=True)
        waiting = [f"customer {customer['id']}"] if customer["qbo_id"] is None else []
        waiting += sorted(
            {f"item {line['item_id']}" for line in lines if snap.items[line["item_id"]]["qbo_id"] is None}
        )
        if waiting:
            message = f"{', '.join(waiting)} not in QuickBooks yet (see their sync log)"
            return Failed("invoice", invoice_id, "create", message, retryable=True, sent=False)
        doc_number = invoice_doc_number(invoice)
        assert doc_number is not None  # validation refuses a blank DocNumber
        item_qbo_ids = {item_id: str(item["qbo_id"]) for item_id, item in snap.items.items()}
        chain = snap.chain(invoice_id)
        busy = self._elsewhere(chain, snap.invoices)
        if busy:
            message = (
                f"invoice {invoice_id} waits for invoice {busy[0]}, which it replaces, to be settled by the chunk "
                "of this push that is sending it; then that one is voided first"
            )
            return Failed(
                "invoice", invoice_id, "create", message, retryable=True, sent=False, waits_here=True
            )
        body = invoice_to_qbo(
            invoice,
            lines,
            customer_qbo_id=str(customer["qbo_id"]),
            item_qbo_ids=item_qbo_ids,
            replaces_doc_number=snap.rows[chain[0]]["doc_number"] if chain else None,
        )
        plan.creates.append(_Create(invoice, invoice_fingerprint(invoice, lines), doc_number, body, chain))
        return None

    @staticmethod
    def _pushed_before(snap: _Snapshot, invoice_id: int) -> Outcome:
        """An open or draft invoice Batchly recorded in QuickBooks: nothing is sent. Any edit since is refused with
        ``sync_status = error``; none (or an edit undone) keeps or makes it ``synced``."""
        invoice, state = snap.invoices[invoice_id], snap.states.get(invoice_id)
        if state is None:
            message = f"invoice {invoice_id} qbo_id: {IMMUTABLE_MESSAGE}"
            return Failed("invoice", invoice_id, "update", message, retryable=False, invoice_status="error")
        voided = snap.voided(invoice_id)
        corrected_by = _open_replacements(snap, invoice_id)
        if voided and invoice["status"] == "open" and corrected_by:
            # the app never voids an original it corrects: open here, voided there by its correction is settled
            message = f"voided in QuickBooks by its correction, invoice {corrected_by[0]['id']}"
            return Pushed("invoice", invoice_id, "skip", message=message, invoice_status="voided")
        issues = [
            str(issue)
            for issue in validate_pushed_invoice(
                invoice, snap.lines.get(invoice_id, []), state.base, voided=voided
            )
        ]
        open_targets = [t for t in snap.chain(invoice_id) if t in snap.states and not snap.voided(t)]
        if not issues and open_targets:  # a base from before bases recorded replaces_invoice_id
            target = open_targets[0]
            issues.append(
                f"invoice {invoice_id} replaces_invoice_id: it replaces invoice {target}, which is still open in "
                f"QuickBooks (Id {snap.states[target].qbo_id}), but is in QuickBooks itself already: nothing was "
                f"voided — void invoice {target} (status void) if this one supersedes it, or clear "
                "replaces_invoice_id"
            )
        if issues:
            return Failed(
                "invoice", invoice_id, "update", "; ".join(issues), retryable=False, invoice_status="error"
            )
        status = "voided" if voided else "synced"
        return Pushed("invoice", invoice_id, "skip", message="already in QuickBooks", invoice_status=status)

    @staticmethod
    def _retire(snap: _Snapshot, plan: _Plan, outcome: Pushed) -> Outcome | None:
        """An invoice that must not be open in QuickBooks (a draft, superseded, voided, deleted) and needs nothing
        sent: acknowledged with ``outcome`` now if it was never sent, otherwise once every lost copy earlier pushes
        of it may have left is void."""
        if not snap.sends.get(outcome.entity_id):
            return outcome
        plan.retired[outcome.entity_id] = outcome
        return None

    @staticmethod
    def _superseded(snap: _Snapshot, invoice_id: int, plan: _Plan) -> Outcome | None:
        """An invoice not in QuickBooks that an open replacement supersedes is never sent: acknowledged when the
        replacement is in QuickBooks, decided after the creates when it is in this chunk, otherwise left pending.
        Draft, void and refused (``sync_status = error`` and not in QuickBooks) replacements supersede nothing."""
        open_ones = _open_replacements(snap, invoice_id)
        pushed = _successor_in_quickbooks(snap, invoice_id)
        if pushed is not None:
            return Pushed(
                "invoice", invoice_id, "skip", message=f"replaced by invoice {pushed}: never pushed"
            )
        here = [row["id"] for row in open_ones if row["id"] in snap.invoices]
        if here:
            plan.deferred[invoice_id] = here
            return None
        if open_ones:
            message = f"waiting for invoice {open_ones[0]['id']}, which replaces it, to reach QuickBooks"
            return Failed(
                "invoice", invoice_id, "create", message, retryable=True, sent=False, waits_here=True
            )
        return None

    @staticmethod
    def _settle_deferred(
        deferred: Mapping[int, list[int]], pushed: set[int], held: Set[int] = frozenset()
    ) -> list[Outcome]:
        """Invoices whose replacement (or its replacement, …) reached QuickBooks in this chunk are acknowledged;
        the others stay pending until it does — due again at once when it is ``held`` for the next claim."""
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
                now = bool(held & set(replacements))
                outcomes.append(
                    Failed(
                        "invoice",
                        invoice_id,
                        "create",
                        message,
                        retryable=True,
                        sent=False,
                        retry_now=now,
                        waits_here=True,
                    )
                )
        return outcomes

    # -- what QuickBooks holds ---------------------------------------------------------------------------------
    def _lookup(self, snap: _Snapshot, plan: _Plan) -> _Found:
        """One query for every DocNumber the chunk may find in QuickBooks — its creates, the invoices to void that
        Batchly has no link for, and every DocNumber any of them was ever sent with — and one read of the linked
        invoices to void (their payments and SyncToken as they are now)."""
        targets = [*plan.own_voids, *(t for c in plan.creates for t in c.replaces if not snap.voided(t))]
        docs = {create.doc_number for create in plan.creates}
        docs |= {doc for t in targets if t not in snap.states and (doc := invoice_doc_number(snap.rows[t]))}
        for invoice_id in [*(c.id for c in plan.creates), *plan.retired, *targets]:
            docs |= {send.doc_number for send in snap.sends.get(invoice_id, [])}
        found = _Found()
        if docs:
            where = [q.condition("DocNumber", "IN", sorted(docs))]
            for row in self.ctx.client.query(q.select("Invoice", where, max_results=q.MAX_RESULTS)).rows:
                found.by_key.setdefault(doc_number_key(str(row.get("DocNumber") or "")), []).append(row)
        linked_ids = sorted({snap.states[t].qbo_id for t in targets if t in snap.states})
        if linked_ids:
            found.current = {str(obj["Id"]): obj for obj in self.ctx.client.read_many("Invoice", linked_ids)}
        qbo_ids = [str(row["Id"]) for rows in found.by_key.values() for row in rows]
        if qbo_ids:
            with self.ctx.engine.connect() as conn:
                states = load_states(conn, self.ctx.organization_id, "invoice", qbo_ids=qbo_ids)
            found.linked = {st.qbo_id: st.entity_id for st in states}
        return found

    def _copies(self, snap: _Snapshot, found: _Found, target: int) -> list[_Void]:
        """What QuickBooks holds of an invoice to void: the linked invoice (re-read now; none when deleted there) or
        else the unlinked one with its DocNumber and customer (a create applied whose checkpoint was lost) or a lost
        copy under a DocNumber it was sent with before, linked now; and every other lost copy of it."""
        lost = self._lost_copies(snap, found, target, keep=None)
        state = snap.states.get(target)
        if state is not None:
            current = found.current.get(state.qbo_id)
            return [_Void(current, target=target, state=state), *lost] if current is not None else lost
        customer, doc_number = snap.customer_qbo_id(target), invoice_doc_number(snap.rows[target])
        key = doc_number_key(doc_number) if doc_number is not None else None
        match: QboInvoice | None = next(
            (row for row in found.free(key) if customer is not None and _customer(row) == customer), None
        )
        if match is None and lost:
            match = lost[0].obj
        if match is None:
            return []
        found.taken.add(str(match["Id"]))
        base = _base(snap.fingerprint(target), snap.rows[target])
        link = link_state(self.ctx.organization_id, ("invoice", target), match, base)
        return [_Void(match, target=target, state=link), *(v for v in lost if v.qbo_id != str(match["Id"]))]

    @staticmethod
    def _lost_copies(snap: _Snapshot, found: _Found, invoice_id: int, *, keep: str | None) -> list[_Void]:
        """Open, unlinked QuickBooks invoices an earlier push of ``invoice_id`` created — same DocNumber (but ``keep``,
        the one its create is guarded by) and customer as one of its sends — that Batchly never recorded."""
        sent_as = snap.sent_as(invoice_id)
        lost: list[_Void] = []
        for key in sorted({key for key, _ in sent_as} - {keep}):
            for row in found.free(key):
                if (key, _customer(row)) in sent_as and not is_voided(row):
                    lost.append(_Void(row, copy_of=invoice_id))
        return lost

    def _guard(self, snap: _Snapshot, plan: _Plan, found: _Found) -> list[tuple[_Create, QboInvoice | None]]:
        """The DocNumber guard: every create is linked to the QuickBooks invoice that is it, left to create (``None``),
        or failed for review when QuickBooks holds its DocNumber otherwise (noted in ``plan``). A voided copy this
        invoice was sent as is no reason for review: whether its DocNumber may be used again is QuickBooks' call."""
        guarded: list[tuple[_Create, QboInvoice | None]] = []
        keys: dict[str, int] = {}
        for planned in plan.creates:
            sent_as = snap.sent_as(planned.id)
            voided = {
                str(row["Id"])
                for key in {planned.key} | {key for key, _ in sent_as}
                for row in found.by_key.get(key, [])
                if is_voided(row) and (key, _customer(row)) in sent_as
            }
            create = replace(
                planned, voided_copies=tuple(sorted(voided, key=lambda qbo_id: (len(qbo_id), qbo_id)))
            )
            holders = [
                row
                for row in found.by_key.get(create.key, [])
                if not (is_voided(row) and (create.key, _customer(row)) in sent_as)
            ]
            match = next((row for row in found.free(create.key) if not _differences(row, create)), None)
            if match is not None:
                found.taken.add(str(match["Id"]))
                guarded.append((create, match))
            elif holders:
                plan.outcomes.append(self._held_elsewhere(create, holders[0], found))
            elif create.key in keys:
                message = (
                    f"invoice {create.id} doc_number: {create.doc_number!r} is the DocNumber of invoice "
                    f"{keys[create.key]} in this push to QuickBooks, which compares DocNumbers without letter case; "
                    "give one of them another number, then retry"
                )
                plan.outcomes.append(
                    Failed("invoice", create.id, "create", message, retryable=False, invoice_status="error")
                )
            else:
                keys[create.key] = create.id
                guarded.append((create, None))
        return guarded

    @staticmethod
    def _held_elsewhere(create: _Create, holder: QboInvoice, found: _Found) -> Failed:
        """QuickBooks holds the DocNumber in an invoice that is not this one (or no longer looks like it): review."""
        invoice_id, doc_number, qbo_id = create.id, create.doc_number, str(holder["Id"])
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

    # -- voids ---------------------------------------------------------------------------------------------------
    def _void(
        self, voids: list[_Void], plan: _Plan, *, riders: Sequence[WriteOp] = ()
    ) -> tuple[list[Outcome], set[int], dict[Hashable, WriteResult]]:
        """Void what must not stay open, in one batch call with ``riders`` (creates none of these voids holds up)
        after the voids: an invoice with payments applied is never sent (its owners fail with the reason), one
        QuickBooks already voided is only recorded. Returns the outcomes (the owners' final ones too, but for
        creates, and those of the retired invoices), the owners that cannot go on, and the riders' results."""
        blocked = {
            void.qbo_id: f"{void} has payments applied in QuickBooks ({describe_payments(void.obj)}), so it "
            "cannot be voided: unapply or refund them there first"
            for void in voids
            if not is_voided(void.obj) and applied_payments(void.obj) is not None
        }
        doomed = {owner for void in voids if void.qbo_id in blocked for owner in void.owners}
        done = {void.qbo_id: void.obj for void in voids if is_voided(void.obj)}
        sendable = [
            void
            for void in voids
            if void.qbo_id not in blocked and void.qbo_id not in done and set(void.owners) - doomed
        ]
        sent, failed, answers = self._send_voids(sendable, riders)
        done.update(sent)
        problems: dict[int, list[tuple[str, bool]]] = {}
        for void in voids:
            for owner, role in void.owners.items():
                if void.qbo_id in blocked:
                    problems.setdefault(owner, []).append(
                        (_refused(owner, role, blocked[void.qbo_id]), False)
                    )
                elif void.qbo_id in failed:
                    reason, retryable = failed[void.qbo_id]
                    problems.setdefault(owner, []).append((_not_voided(void, role, reason), retryable))
        outcomes: list[Outcome] = []
        for void in voids:
            if void.qbo_id not in done:
                continue
            obj = done[void.qbo_id]
            if void.target is None:
                assert void.copy_of is not None
                outcomes.append(Pushed("invoice", void.copy_of, "void", message=f"voided {void}", hold=True))
                continue
            assert void.state is not None
            acks = void.owners.get(void.target) == OWN and not problems.get(void.target)
            outcomes.append(
                Pushed(
                    "invoice",
                    void.target,
                    "void",
                    qbo_obj=obj,
                    base={**void.state.base, "voided": True},
                    invoice_status="voided",
                    message=None if void.qbo_id in sent else "already void in QuickBooks",
                    hold=not acks,
                )
            )
        for owner, reasons in problems.items():
            retryable = all(r for _, r in reasons)
            message = "; ".join(m for m, _ in reasons)
            status = None if retryable else "error"
            outcomes.append(Failed("invoice", owner, "void", message, retryable, invoice_status=status))
        for invoice_id, outcome in plan.retired.items():
            if invoice_id not in problems:
                outcomes.append(outcome)
        return outcomes, set(problems), answers

    def _send_voids(
        self, voids: list[_Void], riders: Sequence[WriteOp] = ()
    ) -> tuple[dict[str, QboInvoice], dict[str, tuple[str, bool]], dict[Hashable, WriteResult]]:
        """Void invoices in one batch call — ``riders`` (creates) after them in the same call, their results returned
        by key; a stale SyncToken is retried with the re-read one (a call of its own)."""
        done: dict[str, QboInvoice] = {}
        failed: dict[str, tuple[str, bool]] = {}
        answers: dict[Hashable, WriteResult] = {}
        pending = {void.qbo_id: str(void.obj["SyncToken"]) for void in voids}
        for round_ in range(VOID_ROUNDS):
            extra = list(riders) if round_ == 0 else []
            if not pending and not extra:
                break
            ops = [
                WriteOp(
                    qbo_id,
                    "Invoice",
                    "void",
                    {"Id": qbo_id, "SyncToken": token},
                    request_id("void", "invoice", f"{self.ctx.organization_id}:{qbo_id}", token),
                )
                for qbo_id, token in pending.items()
            ]
            retry: dict[str, str] = {}
            # with creates aboard a lost answer is not replayed: their recovery reads what QuickBooks holds, and a
            # void whose answer is lost is retried with its owner (found void then, it is only recorded)
            results = self.ctx.client.write_batch([*ops, *extra], replay_lost=not extra)
            riding = {op.key for op in extra}
            answers.update({result.key: result for result in results if result.key in riding})
            for result in results:
                if result.key in riding:
                    continue
                qbo_id = str(result.key)
                if result.ok and result.entity_obj is not None:
                    done[qbo_id] = result.entity_obj
                elif isinstance(result.error, StaleObjectError) and result.current is not None:
                    retry[qbo_id] = str(result.current["SyncToken"])
                else:
                    error = result.error or QboError("no answer for this void")
                    failed[qbo_id] = (describe(error), error.retryable)
            pending = retry
        failed.update({qbo_id: ("QuickBooks kept changing it", True) for qbo_id in pending})
        return done, failed, answers

    # -- creates -------------------------------------------------------------------------------------------------
    def _prepare_creates(
        self, ready: Sequence[tuple[_Create, QboInvoice | None]]
    ) -> tuple[list[Outcome], dict[int, _Create], list[WriteOp]]:
        """Links for the invoices QuickBooks already holds, and the create ops for the others — each of their
        (DocNumber, customer) recorded before it is sent (by :meth:`_send_voids`, in one batch call)."""
        outcomes: list[Outcome] = [
            self._pushed(create, "link", match) for create, match in ready if match is not None
        ]
        ops = {create.id: create for create, match in ready if match is None}
        if not ops:
            return outcomes, ops, []
        record_sends(
            self.ctx.engine,
            self.ctx.client.realm_id,
            self.ctx.organization_id,
            [InvoiceSend(i, c.doc_number, str(c.body["CustomerRef"]["value"])) for i, c in ops.items()],
        )
        writes = [
            WriteOp(
                invoice_id,
                "Invoice",
                "create",
                dict(create.body),
                request_id(
                    "create",
                    "invoice",
                    f"{self.ctx.organization_id}:{invoice_id}",
                    create.fingerprint + create.generation,
                ),
            )
            for invoice_id, create in ops.items()
        ]
        return outcomes, ops, writes

    def _created(self, ops: Mapping[int, _Create], answers: Mapping[Hashable, WriteResult]) -> list[Outcome]:
        """The creates' outcomes from their answers; those whose answer was lost are looked for in QuickBooks."""
        outcomes: list[Outcome] = []
        lost: list[_Create] = []
        for invoice_id, create in ops.items():
            result = answers.get(invoice_id) or WriteResult(
                invoice_id, False, error=QboError("no answer for this write")
            )
            if (
                result.ok
                and result.entity_obj is not None
                and str(result.entity_obj["Id"]) in create.voided_copies
            ):
                message = (  # a replay of an earlier create's stored answer: that copy is voided, nothing new exists
                    f"invoice {create.id}: QuickBooks answered the create with invoice {result.entity_obj['Id']}, a "
                    "copy of it voided before (a replay of an earlier request); it is created again on the retry"
                )
                outcomes.append(Failed("invoice", create.id, "create", message, retryable=True))
            elif result.ok and result.entity_obj is not None:
                outcomes.append(self._pushed(create, "create", result.entity_obj))
            elif isinstance(result.error, AnswerLost):
                lost.append(create)
            else:
                error = result.error or QboError("no answer for this write")
                refused = None if error.retryable else "error"  # refused for good: the invoice shows it
                outcomes.append(
                    Failed(
                        "invoice",
                        create.id,
                        "create",
                        describe(error),
                        error.retryable,
                        invoice_status=refused,
                    )
                )
        if lost:
            outcomes += self._recover(lost)
        return outcomes

    def _recover(self, lost: Sequence[_Create]) -> list[Outcome]:
        """Creates whose batch answer was lost, found by one DocNumber query (a read, where a replay of the batch call
        would cost a batch call with the same odds of losing its answer again). Before the send the guard found no
        free invoice with their DocNumber that is them, and one push holds the company, so the one unlinked, open
        invoice with the DocNumber, customer, total, dates and lines is what the create wrote; none (not applied) or
        several, and the create fails to be retried, where the guard decides again."""
        where = [q.condition("DocNumber", "IN", sorted({create.doc_number for create in lost}))]
        rows = self.ctx.client.query(q.select("Invoice", where, max_results=q.MAX_RESULTS)).rows
        linked: set[str] = set()
        if rows:
            with self.ctx.engine.connect() as conn:
                states = load_states(
                    conn, self.ctx.organization_id, "invoice", qbo_ids=[str(row["Id"]) for row in rows]
                )
            linked = {state.qbo_id for state in states}
        outcomes: list[Outcome] = []
        for create in lost:
            matches = [
                row
                for row in rows
                if doc_number_key(str(row.get("DocNumber") or "")) == create.key
                and str(row["Id"]) not in linked
                and not is_voided(row)
                and not _differences(row, create)
            ]
            if len(matches) == 1:
                outcomes.append(self._pushed(create, "create", matches[0]))
            else:
                found = "no invoice" if not matches else f"{len(matches)} invoices"
                message = (
                    f"invoice {create.id}: QuickBooks' answer to its create was lost and it holds {found} with "
                    f"DocNumber {create.doc_number!r} that is this one; retried after the DocNumber guard"
                )
                outcomes.append(Failed("invoice", create.id, "create", message, retryable=True))
        return outcomes

    @staticmethod
    def _pushed(create: _Create, action: str, obj: QboInvoice) -> Pushed:
        return Pushed(
            "invoice",
            create.id,
            action,
            qbo_obj=obj,
            base=_base(create.fingerprint, create.invoice),
            invoice_status="synced",
            message=f"replaces invoice {create.replaces[0]}" if create.replaces else None,
        )


def _dead_lettered_reference(
    invoice_id: int,
    customer: Mapping[str, Any],
    lines: Sequence[Mapping[str, Any]],
    items: Mapping[int, Mapping[str, Any]],
    dead_letters: Mapping[RecordKey, str],
) -> str | None:
    """Why the invoice waits: the first of its customer and items that QuickBooks does not hold and that is in the
    dead letter, with that record's error — else ``None``."""
    references = [("customer_id", "customer", customer)] + [
        (f"lines[{line['line_no']}].item_id", "item", items[line["item_id"]]) for line in lines
    ]
    for name, kind, row in references:
        error = dead_letters.get((kind, row["id"])) if row["qbo_id"] is None else None
        if error is not None:
            return (
                f"invoice {invoice_id} {name}: {kind} {row['id']} is in the dead letter ({error}); the invoice "
                f"waits for it and follows it to QuickBooks once it is fixed and retried (or its review settled)"
            )
    return None


def _open_replacements(snap: _Snapshot, invoice_id: int) -> list[dict[str, Any]]:
    """The open invoices that replace ``invoice_id`` and are in QuickBooks or on their way (not refused there)."""
    return [
        row
        for row in snap.replacements.get(invoice_id, [])
        if row["status"] == "open" and (row["qbo_id"] is not None or row["sync_status"] != "error")
    ]


def _successor_in_quickbooks(snap: _Snapshot, invoice_id: int) -> int | None:
    """An open invoice in QuickBooks that replaces ``invoice_id`` — directly, or through open replacements that are
    not in QuickBooks themselves (a correction corrected again before it was pushed: it never will be) — or
    ``None``."""
    seen = {invoice_id}
    level = [invoice_id]
    for _ in range(MAX_CHAIN):
        rows = [
            row for current in level for row in _open_replacements(snap, current) if row["id"] not in seen
        ]
        pushed = next((row["id"] for row in rows if row["qbo_id"] is not None), None)
        if pushed is not None or not rows:
            return pushed
        seen.update(row["id"] for row in rows)
        level = [row["id"] for row in rows]
    return None


def _writes_planned(snap: _Snapshot, plan: _Plan) -> int:
    """How many writes the chunk's batch call will carry, as far as its plan tells before QuickBooks is asked: the
    voids of its invoices set to void that QuickBooks may hold (linked, or sent before), those of its corrections'
    open originals (a correction itself waits for the next claim) and its other creates. Lost copies the DocNumber
    guard may find come on top (rare: a write whose answer was lost)."""
    voids = {t for t in plan.own_voids if t in snap.states or snap.sends.get(t)}
    creates = 0
    for create in plan.creates:
        open_targets = {t for t in create.replaces if t in snap.states and not snap.voided(t)}
        voids |= open_targets
        creates += not open_targets
    return creates + len(voids)


def _owe(voids: dict[str, _Void], copies: Iterable[_Void], owner: int, role: str) -> None:
    """``owner`` goes on only once ``copies`` are void (one void per QuickBooks invoice, whoever waits for it)."""
    for copy in copies:
        void = voids.setdefault(copy.qbo_id, copy)
        if void.target is None and copy.target is not None:  # a lost copy someone links: it is that invoice
            void.target, void.state = copy.target, copy.state
        void.owners.setdefault(owner, role)


def _waited_for(voids: Mapping[str, _Void], owner: int) -> str:
    """The voids ``owner`` waits for, named."""
    return ", ".join(str(void) for void in voids.values() if owner in void.owners and not is_voided(void.obj))


def _refused(owner: int, role: str, reason: str) -> str:
    """Why ``owner`` was refused up front: a void it needs must not be asked of QuickBooks."""
    if role == REPLACED:
        return f"invoice {owner} replaces_invoice_id: {reason}; this correction was not created"
    if role == LOST_COPY:
        return f"invoice {owner} doc_number: {reason}; nothing more is sent for this invoice until it is void"
    return f"invoice {owner} status: {reason}"


def _not_voided(void: _Void, role: str, reason: str) -> str:
    """Why the owner of a void QuickBooks did not apply cannot go on."""
    if role == OWN:
        return reason
    which = ", which it replaces" if role == REPLACED else ""
    return f"could not void {void}{which}: {reason}"


def _customer(row: QboInvoice) -> str:
    return str((row.get("CustomerRef") or {}).get("value"))


def _differences(found: QboInvoice, create: _Create) -> list[str]:
    """How QuickBooks' invoice differs from what Batchly would send: customer, total, dates, lines (item,
    quantity, amount). Empty when it is this invoice."""
    body = create.body
    differences = []
    customer = _customer(found)
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
