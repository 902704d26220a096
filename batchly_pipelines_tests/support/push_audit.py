"""The push's promises checked at rest, against the sandbox's books: the referee of the chaos benchmark.

Nothing here asks Batchly's code what it did: QuickBooks' side is read straight from the sandbox's state (no API
calls), Batchly's side from its tables, and the two are compared with the rules a person would apply.

What Batchly wants in QuickBooks for each of its invoices:

- *open*: an open invoice nobody replaced — exactly one open QuickBooks invoice with its DocNumber, for its customer
  and its total;
- *closed*: a void invoice, one Batchly records as voided there, or one replaced by an open correction that was not
  refused (``replaces_invoice_id``) — no open QuickBooks invoice with its DocNumber.

DocNumbers compare case-insensitively and trimmed, as QuickBooks compares them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.store import schema as s
from qbo_sandbox.server import SandboxServer

EXAMPLES = 5  # violations listed per kind, so a failed run says which records to look at
NAMED = {"Invoice": "DocNumber", "Customer": "DisplayName", "Item": "Name"}
TABLES = {"Invoice": s.invoices, "Customer": s.customers, "Item": s.items}
COLUMNS = {"Invoice": "doc_number", "Customer": "display_name", "Item": "name"}


@dataclass(frozen=True)
class Tenant:
    """A Batchly organisation and the QuickBooks company it is meant to be bound to."""

    organization_id: int
    realm_id: str


def doc_key(value: Any) -> str:
    """A DocNumber (or name) as QuickBooks compares it: trimmed, case-insensitive."""
    return str(value or "").strip().casefold()


def is_voided(invoice: Mapping[str, Any]) -> bool:
    """A QuickBooks invoice that was voided (the sandbox, like QuickBooks, prepends ``Voided`` to its note)."""
    return str(invoice.get("PrivateNote") or "").startswith("Voided")


def audit(engine: Engine, sandbox: SandboxServer, tenants: Sequence[Tenant]) -> dict[str, Any]:
    """Every invariant, counted over all tenants, with a few examples of each violation.

    ``duplicates``: QuickBooks invoices beyond the first with one DocNumber. ``open_pairs``: corrections whose
    original is open in QuickBooks too. ``orphans``: open QuickBooks invoices no Batchly invoice is linked to.
    ``false_errors``: invoices Batchly shows as failed (``sync_status = error`` or a dead queue row) although
    QuickBooks holds exactly what Batchly wants. ``cross_company_writes``: invoices, customers and items in a company
    that carry another tenant's DocNumber or name and none of its own. Beside them, each with no error shown in Batchly:
    ``missing`` (wanted open, not in QuickBooks), ``stale_open`` (wanted closed, still open), ``mismatched`` (wanted
    open, but QuickBooks' open copies are not exactly one for its customer and total), ``unlinked`` (right in
    QuickBooks but Batchly has no link to it); and ``true_errors`` (failed, and QuickBooks is indeed not right).
    """
    counts: Counter[str] = Counter()
    examples: dict[str, list[Any]] = defaultdict(list)

    def violation(kind: str, example: Any) -> None:
        counts[kind] += 1
        if len(examples[kind]) < EXAMPLES:
            examples[kind].append(example)

    keys = {t.realm_id: _own_keys(engine, t.organization_id) for t in tenants}
    per_tenant = {}
    for tenant in tenants:
        books = _objects(sandbox, tenant.realm_id)
        per_tenant[tenant.organization_id] = _audit_invoices(engine, tenant, books["Invoice"], violation)
        for entity, objects in books.items():
            for obj in objects:
                key = doc_key(obj.get(NAMED[entity]))
                mine = key in keys[tenant.realm_id][entity]
                theirs = [r for r, k in keys.items() if r != tenant.realm_id and key in k[entity]]
                if theirs and not mine:
                    violation(
                        "cross_company_writes",
                        {
                            "realm": tenant.realm_id,
                            "entity": entity,
                            "key": obj.get(NAMED[entity]),
                            "Id": obj["Id"],
                        },
                    )
    kinds = ("duplicates", "open_pairs", "orphans", "false_errors", "cross_company_writes")
    extra = ("missing", "stale_open", "mismatched", "unlinked", "true_errors")
    return {
        **{kind: counts[kind] for kind in (*kinds, *extra)},
        "tenants": per_tenant,
        "examples": {kind: examples[kind] for kind in (*kinds, *extra) if examples[kind]},
    }


def _objects(sandbox: SandboxServer, realm_id: str) -> dict[str, list[dict[str, Any]]]:
    realm = sandbox.state.realm(realm_id)
    assert realm is not None, f"no realm {realm_id} in the sandbox"
    with realm.lock:
        return {entity: [dict(obj) for obj in realm.objects[entity].values()] for entity in NAMED}


def _own_keys(engine: Engine, organization_id: int) -> dict[str, set[str]]:
    """The DocNumbers and names of an organisation's records, as QuickBooks compares them."""
    with engine.connect() as conn:
        return {
            entity: {
                doc_key(value)
                for value in conn.execute(
                    sa.select(table.c[COLUMNS[entity]]).where(table.c.organization_id == organization_id)
                ).scalars()
            }
            for entity, table in TABLES.items()
        }


def _audit_invoices(
    engine: Engine, tenant: Tenant, qbo_invoices: list[dict[str, Any]], violation: Any
) -> dict[str, int]:
    rows, customers, linked, failed = _batchly_side(engine, tenant.organization_id)
    by_doc: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for invoice in qbo_invoices:
        by_doc[doc_key(invoice.get("DocNumber"))].append(invoice)
    for _, copies in sorted(by_doc.items()):
        for extra in copies[1:]:
            violation("duplicates", {"DocNumber": extra.get("DocNumber"), "Ids": [c["Id"] for c in copies]})
    open_by_doc = {doc: [c for c in copies if not is_voided(c)] for doc, copies in by_doc.items()}
    for invoice in qbo_invoices:
        if not is_voided(invoice) and str(invoice["Id"]) not in linked:
            violation("orphans", {"DocNumber": invoice.get("DocNumber"), "Id": invoice["Id"]})

    replacements: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows.values():
        if row["replaces_invoice_id"] is not None:
            replacements[row["replaces_invoice_id"]].append(row)
    for row in rows.values():
        original = rows.get(row["replaces_invoice_id"])
        if (
            original is not None
            and open_by_doc.get(doc_key(row["doc_number"]))
            and open_by_doc.get(doc_key(original["doc_number"]))
        ):
            violation("open_pairs", {"correction": row["id"], "original": original["id"]})

    for invoice_id, row in sorted(rows.items()):
        wanted_open = _wanted_open(row, replacements[invoice_id])
        open_copies = open_by_doc.get(doc_key(row["doc_number"]), [])
        customer = customers.get(row["customer_id"])
        right = (
            len(open_copies) == 1
            and str(open_copies[0]["CustomerRef"]["value"]) == str(customer)
            and Decimal(str(open_copies[0]["TotalAmt"])) == row["total_amount"]
            if wanted_open
            else not open_copies
        )
        example = {"invoice": invoice_id, "DocNumber": row["doc_number"], "status": row["status"]}
        if invoice_id in failed:
            kind = "false_errors" if right else "true_errors"
            violation(kind, {**example, "error": failed[invoice_id]})
        elif wanted_open and not open_copies:
            violation("missing", example)
        elif not wanted_open and open_copies:
            violation("stale_open", {**example, "open_Ids": [c["Id"] for c in open_copies]})
        elif wanted_open and not right:
            violation("mismatched", {**example, "open_Ids": [c["Id"] for c in open_copies]})
        elif wanted_open and str(row["qbo_id"]) != str(open_copies[0]["Id"]):
            violation("unlinked", {**example, "qbo_id": row["qbo_id"], "Id": open_copies[0]["Id"]})
    return {
        "invoices": len(rows),
        "invoices_in_qbo": len(qbo_invoices),
        "open_in_qbo": sum(not is_voided(i) for i in qbo_invoices),
        "voided_in_qbo": sum(is_voided(i) for i in qbo_invoices),
    }


def _wanted_open(row: Mapping[str, Any], replacements: Iterable[Mapping[str, Any]]) -> bool:
    if row["status"] != "open" or row["sync_status"] == "voided":
        return False
    return not any(r["status"] == "open" and r["sync_status"] != "error" for r in replacements)


def _batchly_side(
    engine: Engine, organization_id: int
) -> tuple[dict[int, Mapping[str, Any]], dict[int, str | None], set[str], dict[int, str]]:
    """The organisation's invoices; its customers' QuickBooks ids; every QuickBooks invoice Id it links to; and the
    invoices it shows as failed, with why."""
    inv, st, q = s.invoices.c, s.qbo_sync_state.c, s.sync_queue.c
    with engine.connect() as conn:
        rows: dict[int, Mapping[str, Any]] = {
            row["id"]: dict(row)
            for row in conn.execute(
                sa.select(s.invoices).where(inv.organization_id == organization_id)
            ).mappings()
        }
        customers: dict[int, str | None] = dict(
            conn.execute(
                sa.select(s.customers.c.id, s.customers.c.qbo_id).where(
                    s.customers.c.organization_id == organization_id
                )
            ).all()
        )
        linked = set(
            conn.execute(
                sa.select(st.qbo_id).where(st.organization_id == organization_id, st.entity_type == "invoice")
            ).scalars()
        ) | {str(row["qbo_id"]) for row in rows.values() if row["qbo_id"] is not None}
        newest = (
            sa.select(q.entity_id, q.status, q.last_error)
            .where(q.organization_id == organization_id, q.entity_type == "invoice")
            .order_by(q.entity_id, q.id.desc())
        )
        queue: dict[int, tuple[str, str | None]] = {}
        for entity_id, status, error in conn.execute(newest):
            queue.setdefault(entity_id, (status, error))
    failed = {
        invoice_id: (queue.get(invoice_id, ("", None))[1] or "sync_status = error")
        for invoice_id, row in rows.items()
        if row["sync_status"] == "error" or queue.get(invoice_id, ("",))[0] == "dead"
    }
    return rows, customers, linked, failed
