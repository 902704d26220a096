"""A company's books: create, read, update, delete, void, query and CDC with QBO's rules and derived amounts.

All methods take the realm lock. Money is Decimal throughout. Payments applied to an invoice are indexed in
``Realm.applied``; an invoice's ``Balance`` is always ``TotalAmt - Σ applied`` and its ``LinkedTxn`` lists the payments,
and the customer's ``Balance`` is the sum of its open invoice balances. A credit memo a payment line uses is indexed
the same way: its ``Balance`` and ``RemainingCredit`` are ``TotalAmt - Σ used``.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from qbo_sandbox import query as qlang
from qbo_sandbox.clock import Clock, metadata_time, pacific_date, parse_instant
from qbo_sandbox.entities import EntitySpec, spec_for
from qbo_sandbox.index import Entry, TimeIndex
from qbo_sandbox.state import Event, Realm
from qbo_sandbox.wire import (
    QboError,
    business,
    clone,
    invalid,
    not_found,
    query_error,
    required,
    unsupported,
    validation,
)

CDC_LOOKBACK = timedelta(days=30)
CDC_MAX_OBJECTS = 1000
ZERO = Decimal("0.00")


def entity_spec(name: str) -> EntitySpec:
    """The spec for an entity name in any case; an unknown entity is a 400 fault."""
    spec = spec_for(name)
    if spec is None:
        raise invalid(f"Unsupported entity: {name}")
    return spec


def _stale(obj: dict[str, Any]) -> QboError:
    return validation(
        "5010",
        "Stale Object Error",
        f"Stale Object Error : You and root were working on this at the same time. root finished before you did, "
        f"so your work was not saved. (current SyncToken {obj['SyncToken']})",
        "SyncToken",
    )


def payment_links(payment: dict[str, Any]) -> dict[str, Decimal]:
    """Transaction id -> amount a payment applies to it: to each invoice it pays, and from each credit memo whose
    credit it uses (ids are unique across entity types in the sandbox)."""
    links: dict[str, Decimal] = {}
    for line in payment.get("Line", []):
        for link in line["LinkedTxn"]:
            links[link["TxnId"]] = links.get(link["TxnId"], ZERO) + line["Amount"]
    return links


def _link_types(payment: dict[str, Any]) -> dict[str, str]:
    """Transaction id -> the type a payment's lines name it with (Invoice or CreditMemo)."""
    return {link["TxnId"]: link["TxnType"] for line in payment.get("Line", []) for link in line["LinkedTxn"]}


def _changes(name: str, index: TimeIndex, since: datetime) -> Iterator[tuple[Entry, str, dict[str, Any]]]:
    """(index entry, entity name, object) of a store's objects updated at or after ``since``, oldest first."""
    entries, store = index.entries, index.store
    for n in range(index.span(since, True, None, True)[0], len(entries)):
        yield entries[n], name, store[entries[n][2]]


class Books:
    """Operations on one realm. ``at`` fixes the timestamp of every write (used by the seeder)."""

    def __init__(
        self,
        realm: Realm,
        clock: Clock,
        emit: Callable[[Event], None],
        at: datetime | None = None,
    ) -> None:
        self.realm = realm
        self.clock = clock
        self.emit = emit
        self.at = at

    # -- lookups ---------------------------------------------------------------------------------------------
    def visible(self, entity: str, obj_id: str) -> dict[str, Any] | None:
        """An object by id, unless it was created by the batch being executed."""
        if self.realm.hidden and (entity, obj_id) in self.realm.hidden:
            return None
        return self.realm.objects[entity].get(obj_id)

    def today(self) -> date:
        """Today's date in the company's (Pacific) time zone."""
        return pacific_date(self._stamp())

    def _stamp(self) -> datetime:
        if self.at is not None:
            return self.at
        now = self.clock.now_dt().replace(microsecond=0)
        if not self.realm.faults.same_second:
            return now
        if self.realm.pinned_second is None:
            self.realm.pinned_second = now
        return self.realm.pinned_second

    def _existing(self, spec: EntitySpec, payload: dict[str, Any]) -> dict[str, Any]:
        """The object a write names by Id, after the SyncToken check."""
        if payload.get("Id") in (None, ""):
            raise required("Id")
        existing = self.visible(spec.name, str(payload["Id"]))
        if existing is None:
            raise not_found(spec.name)
        if payload.get("SyncToken") in (None, ""):
            raise required("SyncToken")
        if str(payload["SyncToken"]) != existing["SyncToken"]:
            raise _stale(existing)
        return existing

    # -- reads -----------------------------------------------------------------------------------------------
    def read(self, entity: str, obj_id: str) -> tuple[str, dict[str, Any]]:
        """(entity name, a copy of the object) or 610."""
        spec = entity_spec(entity)
        with self.realm.lock:
            obj = self.visible(spec.name, obj_id)
            if obj is None:
                raise not_found(spec.name)
            return spec.name, clone(obj)

    def query(self, statement: str) -> dict[str, Any]:
        """Run a query statement; returns the ``QueryResponse`` object."""
        try:
            parsed = qlang.parse(statement)
            spec = spec_for(parsed.entity)
            if spec is None:
                raise qlang.QueryError(f"QueryValidationError: Invalid context declaration : {parsed.entity}")
            qlang.validate(parsed, spec.fields)
        except qlang.QueryError as exc:
            raise query_error(exc.detail) from exc
        with self.realm.lock:
            hidden = self.realm.hidden or set()
            store = self.realm.objects[spec.name]
            active_only = spec.kind == "name" and not any(c.path == ("active",) for c in parsed.conditions)
            by_id = next((c for c in parsed.conditions if c.path == ("id",)), None)
            index = self.realm.time_index(spec.name) if by_id is None else None
            if index is not None and index.regular:

                def keep(key: str, obj: dict[str, Any]) -> bool:
                    if active_only and obj.get("Active") is False:
                        return False
                    return not hidden or (spec.name, key) not in hidden

                page, total = qlang.run_indexed(parsed, index, keep)
            else:
                if by_id is None:
                    keys: Iterable[str] = store.keys()
                else:  # Id takes only = and IN: look the ids up instead of comparing every object with every id
                    keys = [
                        key for key in dict.fromkeys(str(value) for value in by_id.values) if key in store
                    ]
                    parsed.conditions = [c for c in parsed.conditions if c is not by_id]
                rows = [store[key] for key in keys if (spec.name, key) not in hidden]
                if active_only:
                    rows = [obj for obj in rows if obj.get("Active") is not False]
                page, total = qlang.run(parsed, rows)
            page = clone(page)
        if parsed.count:
            return {"totalCount": total}
        if not page:
            return {}
        return {spec.name: page, "startPosition": parsed.start_position, "maxResults": len(page)}

    def cdc(self, entities: list[str], changed_since: str) -> list[dict[str, Any]]:
        """The ``QueryResponse`` list of a CDC call: changes and deletions since ``changed_since``, ≤ 1000 in total."""
        try:
            since = parse_instant(changed_since)
        except ValueError as exc:
            raise invalid(f"changedSince: {exc}") from exc
        if since < self.clock.now_dt() - CDC_LOOKBACK:
            raise invalid(
                f"Operation cdc with changedSince date {changed_since} which is older than fixed days is not "
                "supported. (changedSince must be within the last 30 days)",
            )
        specs = [entity_spec(name) for name in entities]
        grouped: dict[str, list[dict[str, Any]]] = {}
        with self.realm.lock:
            indexes = [
                (spec.name, self.realm.time_index(spec.name, tombstones))
                for spec in specs
                for tombstones in (False, True)
            ]
            if all(index.regular for _, index in indexes):
                # the oldest changes of every store, merged in (LastUpdatedTime, Id) order; ties keep store order
                streams = [_changes(name, index, since) for name, index in indexes]
                merged = heapq.merge(*streams, key=lambda row: row[0][:2])
                for _, name, obj in itertools.islice(merged, CDC_MAX_OBJECTS):
                    grouped.setdefault(name, []).append(clone(obj))
            else:
                changed: list[tuple[datetime, int, str, dict[str, Any]]] = []
                for spec in specs:
                    for store in (self.realm.objects[spec.name], self.realm.tombstones[spec.name]):
                        for obj in store.values():
                            updated = parse_instant(obj["MetaData"]["LastUpdatedTime"])
                            if updated >= since:
                                changed.append((updated, int(obj["Id"]), spec.name, obj))
                changed.sort(key=lambda row: (row[0], row[1]))
                for _, _, name, obj in changed[:CDC_MAX_OBJECTS]:
                    grouped.setdefault(name, []).append(clone(obj))
        responses: list[dict[str, Any]] = [
            {name: rows, "startPosition": 1, "maxResults": len(rows)}
            for name in dict.fromkeys(spec.name for spec in specs)
            if (rows := grouped.get(name))
        ]
        return responses or [{}]

    # -- writes ----------------------------------------------------------------------------------------------
    def create(self, entity: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Create an object; returns (entity name, a copy of the stored object)."""
        spec = entity_spec(entity)
        with self.realm.lock:
            fields = spec.writable_fields(payload)
            if spec.name == "Invoice" and not fields.get("DocNumber"):
                fields["DocNumber"] = self._next_doc_number()
            body = spec.build(self, fields)
            self._check_unique(spec, body, None)
            links = self._check_payment(body, None) if spec.name == "Payment" else {}
            stamp = metadata_time(self._stamp())
            obj = {
                **body,
                "Id": self.realm.allocate_id(),
                "SyncToken": "0",
                "domain": "QBO",
                "sparse": False,
                "MetaData": {"CreateTime": stamp, "LastUpdatedTime": stamp},
            }
            if spec.name == "Customer":
                obj.update(Balance=ZERO, BalanceWithJobs=ZERO)
            if spec.name == "Invoice":
                obj.update(Balance=obj["TotalAmt"], LinkedTxn=[])
                self._adjust_customer(obj["CustomerRef"]["value"], obj["Balance"])
            self._store(spec, obj, "Create")
            if links:
                self._apply(obj["Id"], links)
            return spec.name, clone(obj)

    def update(self, entity: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Full update (omitted writable fields are cleared) or sparse update (``"sparse": true``)."""
        spec = entity_spec(entity)
        with self.realm.lock:
            existing = self._existing(spec, payload)
            fields = spec.writable_fields(payload)
            if payload.get("sparse") is True:
                fields = {**spec.writable_fields(existing), **fields}
            body = spec.build(self, fields)
            self._check_unique(spec, body, existing["Id"])
            old_links = payment_links(existing) if spec.name == "Payment" else {}
            links = self._check_payment(body, existing["Id"]) if spec.name == "Payment" else {}
            carried: dict[str, Any] = {
                key: existing[key] for key in ("Balance", "BalanceWithJobs", "LinkedTxn") if key in existing
            }
            obj: dict[str, Any] = {**body, **carried, **self._bumped(existing)}
            if spec.name == "Invoice":
                paid = self._paid(obj["Id"])
                if obj["TotalAmt"] < paid:
                    raise business("The invoice total cannot be less than the payments applied to it", "Line")
                obj["Balance"] = obj["TotalAmt"] - paid
                self._adjust_customer(existing["CustomerRef"]["value"], -existing["Balance"])
                self._adjust_customer(obj["CustomerRef"]["value"], obj["Balance"])
            if spec.name == "CreditMemo":
                used = self._paid(obj["Id"])
                if obj["TotalAmt"] < used:
                    raise business(
                        "The credit memo total cannot be less than the credit applied from it", "Line"
                    )
                obj["Balance"] = obj["RemainingCredit"] = obj["TotalAmt"] - used
            if spec.name == "RefundReceipt":
                obj["Balance"] = body["Balance"]
            self._store(spec, obj, "Update")
            if old_links or links:
                self._unapply(obj["Id"], old_links)
                self._apply(obj["Id"], links)
            return spec.name, clone(obj)

    def delete(self, entity: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Delete a transaction; returns (entity name, ``{"status": "Deleted", "domain": "QBO", "Id": ...}``)."""
        spec = entity_spec(entity)
        if spec.kind != "transaction":
            raise unsupported(
                f"Operation Delete is not supported for {spec.name}; set Active false",
            )
        with self.realm.lock:
            existing = self._existing(spec, payload)
            self._refuse_if_paid(existing)
            obj_id = existing["Id"]
            if spec.name == "Payment":
                self._unapply(obj_id, payment_links(existing))
            if spec.name == "Invoice":
                self._adjust_customer(existing["CustomerRef"]["value"], -existing["Balance"])
            stamp = self._stamp()
            self._reindex(spec, existing, None)
            self.realm.remove(spec.name, obj_id)
            self.realm.bury(
                spec.name,
                {
                    "Id": obj_id,
                    "status": "Deleted",
                    "domain": "QBO",
                    "MetaData": {"LastUpdatedTime": metadata_time(stamp)},
                },
            )
            self.emit(Event(self.realm.realm_id, spec.name, obj_id, "Delete", stamp))
            return spec.name, {"status": "Deleted", "domain": "QBO", "Id": obj_id}

    def void(self, entity: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Void an invoice or payment: amounts zeroed, ``Voided`` prepended to PrivateNote, SyncToken bumped."""
        spec = entity_spec(entity)
        if spec.name not in ("Invoice", "Payment"):
            raise unsupported(f"Operation Void is not supported for {spec.name}")
        with self.realm.lock:
            existing = self._existing(spec, payload)
            self._refuse_if_paid(existing)
            note = existing.get("PrivateNote")
            obj = {**clone(existing), **self._bumped(existing), "TotalAmt": ZERO}
            obj["PrivateNote"] = f"Voided - {note}" if note else "Voided"
            if spec.name == "Invoice":
                for line in obj["Line"]:
                    line["Amount"] = ZERO
                    if "SalesItemLineDetail" in line:
                        line["SalesItemLineDetail"]["Qty"] = ZERO
                obj["Balance"] = ZERO
                self._adjust_customer(existing["CustomerRef"]["value"], -existing["Balance"])
            else:
                obj.update(Line=[], UnappliedAmt=ZERO)
                self._unapply(existing["Id"], payment_links(existing))
            self._store(spec, obj, "Void")
            return spec.name, clone(obj)

    # -- helpers ---------------------------------------------------------------------------------------------
    def _bumped(self, existing: dict[str, Any]) -> dict[str, Any]:
        """The system fields of the next version of an object."""
        return {
            "Id": existing["Id"],
            "SyncToken": str(int(existing["SyncToken"]) + 1),
            "domain": "QBO",
            "sparse": False,
            "MetaData": {
                "CreateTime": existing["MetaData"]["CreateTime"],
                "LastUpdatedTime": metadata_time(self._stamp()),
            },
        }

    def _store(self, spec: EntitySpec, obj: dict[str, Any], operation: str) -> None:
        self._reindex(spec, self.realm.objects[spec.name].get(obj["Id"]), obj)
        self.realm.put(spec.name, obj)
        if operation == "Create" and self.realm.hidden is not None:
            self.realm.hidden.add((spec.name, obj["Id"]))
        updated = parse_instant(obj["MetaData"]["LastUpdatedTime"])
        self.emit(Event(self.realm.realm_id, spec.name, obj["Id"], operation, updated))

    def _next_doc_number(self) -> str:
        taken = self._index("Invoice.DocNumber")
        while taken.get(str(self.realm.next_doc_number)):
            self.realm.next_doc_number += 1
        number = str(self.realm.next_doc_number)
        self.realm.next_doc_number += 1
        return number

    @staticmethod
    def _unique_keys(spec: EntitySpec, obj: dict[str, Any]) -> list[tuple[str, str]]:
        """The (index, value) pairs an object occupies: its name (case-insensitive) and an invoice's DocNumber."""
        keys = []
        if spec.unique_field is not None and obj.get(spec.unique_field):
            keys.append((f"{spec.name}.name", str(obj[spec.unique_field]).casefold()))
        if spec.name == "Invoice" and obj.get("DocNumber"):
            keys.append(("Invoice.DocNumber", str(obj["DocNumber"])))
        return keys

    def _index(self, name: str) -> dict[str, set[str]]:
        """A uniqueness index (value -> ids), built from the objects on first use."""
        index = self.realm.indexes.get(name)
        if index is None:
            spec = entity_spec(name.partition(".")[0])
            index = {}
            for obj in self.realm.objects[spec.name].values():
                for key, value in self._unique_keys(spec, obj):
                    if key == name:
                        index.setdefault(value, set()).add(obj["Id"])
            self.realm.indexes[name] = index
        return index

    def _reindex(
        self, spec: EntitySpec, previous: dict[str, Any] | None, current: dict[str, Any] | None
    ) -> None:
        """Move an object's entries in the uniqueness indexes from its previous to its current version."""
        if previous is not None:
            for key, value in self._unique_keys(spec, previous):
                self._index(key).get(value, set()).discard(previous["Id"])
        if current is not None:
            for key, value in self._unique_keys(spec, current):
                self._index(key).setdefault(value, set()).add(current["Id"])

    def _check_unique(self, spec: EntitySpec, body: dict[str, Any], own_id: str | None) -> None:
        """6240 for a duplicate name (case-insensitive, inactive records included); 6140 for a DocNumber."""
        for key, value in self._unique_keys(spec, body):
            holders = sorted(self._index(key).get(value, set()) - {own_id}, key=int)
            if not holders:
                continue
            if key == "Invoice.DocNumber":
                if self.realm.unique_doc_numbers:
                    raise validation(
                        "6140",
                        "Duplicate Document Number Error",
                        "Duplicate Document Number Error : You must specify a different number. This number has "
                        f"already been used. DocNumber={body['DocNumber']} is assigned to TxnType=Invoice with "
                        f"TxnId={holders[0]}",
                        "DocNumber",
                    )
                continue
            raise validation(
                "6240",
                "Duplicate Name Exists Error",
                f"The name supplied already exists. : Another {spec.name.lower()} is already using this name. "
                f"Please use a different name. Id={holders[0]}",
                spec.unique_field or "",
            )

    def _refuse_if_paid(self, existing: dict[str, Any]) -> None:
        if self.realm.applied.get(existing["Id"]):
            raise business("This transaction has payments applied to it; delete or void the payments first")

    def _check_payment(self, payment: dict[str, Any], payment_id: str | None) -> dict[str, Decimal]:
        """Validate a payment's links against the balances of the invoices it pays and the credit memos it uses
        (its own current share excluded)."""
        links, types = payment_links(payment), _link_types(payment)
        for txn_id, amount in links.items():
            txn_type = types[txn_id]
            target = self.visible(txn_type, txn_id)
            if target is None:
                raise not_found(txn_type, f"Object Not Found : {txn_type} {txn_id} referenced by LinkedTxn")
            if target["CustomerRef"]["value"] != payment["CustomerRef"]["value"]:
                raise business(f"{txn_type} {txn_id} belongs to another customer", "Line.LinkedTxn")
            own = self.realm.applied.get(txn_id, {}).get(payment_id or "", ZERO)
            if amount > target["Balance"] + own:
                what = "applied to invoice" if txn_type == "Invoice" else "of credit used from credit memo"
                raise business(
                    f"The amount {what} {txn_id} ({amount}) exceeds its balance ({target['Balance']})",
                    "Line.Amount",
                )
        return links

    def _apply(self, payment_id: str, links: dict[str, Decimal]) -> None:
        for txn_id, amount in links.items():
            self.realm.applied[txn_id][payment_id] = amount
            self._refresh_applied(txn_id)

    def _unapply(self, payment_id: str, links: dict[str, Decimal]) -> None:
        for txn_id in links:
            if self.realm.applied.get(txn_id, {}).pop(payment_id, None) is not None:
                self._refresh_applied(txn_id)

    def _refresh_applied(self, txn_id: str) -> None:
        """Recompute an invoice's Balance and LinkedTxn (or a credit memo's remaining credit) from the payment
        index; a new version of it."""
        credit = self.realm.objects["CreditMemo"].get(txn_id)
        if credit is not None:
            remaining = credit["TotalAmt"] - self._paid(txn_id)
            refreshed = {**credit, **self._bumped(credit), "Balance": remaining, "RemainingCredit": remaining}
            self._store(entity_spec("CreditMemo"), refreshed, "Update")
            return
        invoice = self.realm.objects["Invoice"].get(txn_id)
        if invoice is None:
            return
        applied = self.realm.applied.get(txn_id, {})
        balance = invoice["TotalAmt"] - self._paid(txn_id)
        self._adjust_customer(invoice["CustomerRef"]["value"], balance - invoice["Balance"])
        links = [{"TxnId": pid, "TxnType": "Payment"} for pid in sorted(applied, key=int)]
        updated = {**invoice, **self._bumped(invoice), "Balance": balance, "LinkedTxn": links}
        self._store(entity_spec("Invoice"), updated, "Update")

    def _paid(self, txn_id: str) -> Decimal:
        """The total the payments apply to an invoice (or use of a credit memo's credit)."""
        applied = self.realm.applied.get(txn_id)
        return sum(applied.values(), ZERO) if applied else ZERO

    def _adjust_customer(self, customer_id: str, delta: Decimal) -> None:
        """Move a customer's open balance (a derived field: no new version, as in QBO)."""
        customer = self.realm.objects["Customer"].get(customer_id)
        if customer is not None and delta:
            customer["Balance"] += delta
            customer["BalanceWithJobs"] = customer["Balance"]
