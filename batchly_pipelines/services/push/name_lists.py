"""Pushing customers and items: creates, sparse updates of what Batchly changed, 5010 and duplicate-name recovery.

- No link yet → create the full record. A duplicate name (6240) looks the name up in QuickBooks: the same customer
  (same e-mail or phone; for items, the same name) is linked and merged; anything else becomes a conflict for review.
- Linked → a sparse update of the fields Batchly changed since the base (items: the description only, QuickBooks owns
  the rest), with the base's SyncToken. A stale token (5010) merges against the re-read object and retries.
  Validation looks only at the fields sent: a bad value in a field the push leaves alone blocks nothing.
- A Batchly edit of a field QuickBooks owns (an item's name, SKU, type, price, active flag) is never sent and never
  acknowledged as pushed: it is reverted to QuickBooks' value (``item.revert`` when nothing else was to be sent),
  recorded as an ``owned_field`` conflict settled for QuickBooks and logged with why.
- What the push writes into Batchly from QuickBooks (a merge, a revert) must fit Batchly's columns (``rules.storage``,
  as in the pull): a value that does not is left out and the record fails alone, its field named (dead letter).

Merges (after a 5010, and the first link after a 6240) are the pull's: per-field change times decide newest-wins,
a cleared value is a change like any other, the organisation's review fields (and any field with an open review)
are left to a person. Every conflict settled or opened is recorded with its resolution and named in the log entry.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from batchly_pipelines.quickbooks import query as q
from batchly_pipelines.quickbooks.client import WriteOp, WriteResult
from batchly_pipelines.quickbooks.errors import DuplicateNameError, QboError, StaleObjectError
from batchly_pipelines.quickbooks.wire import qbo_last_updated, request_id
from batchly_pipelines.rules.mapping import (
    decode_snapshot,
    encode_snapshot,
    with_identity,
)
from batchly_pipelines.rules.matching import MatchDecision, match_customer
from batchly_pipelines.rules.merge import (
    MergePolicy,
    MergeResult,
    Resolution,
    Rule,
    changes_to_push,
    merge,
    owned_reverts,
)
from batchly_pipelines.rules.name_lists import CUSTOMERS, ITEMS, NameList
from batchly_pipelines.rules.storage import unstorable
from batchly_pipelines.services.push.checkpoint import (
    Failed,
    Outcome,
    PushContext,
    Pushed,
    describe,
)
from batchly_pipelines.store.conflicts import ConflictRecord, open_conflict_fields
from batchly_pipelines.store.field_changes import field_change_times
from batchly_pipelines.store.push_rows import load_rows
from batchly_pipelines.store.records import column_rules
from batchly_pipelines.store.review_fields import review_fields
from batchly_pipelines.store.sync_state import load_states

ROUNDS = 3  # write, then at most two follow-ups (after a 5010 or a duplicate-name link)


@dataclass(frozen=True)
class _Record:
    """A valid Batchly record: its synced fields, when Batchly last changed it and each field, and the merge policy
    for it (the organisation's review fields and its open reviews go to review)."""

    entity_id: int
    fields: Mapping[str, Any]
    updated_at: datetime
    changed_at: Mapping[str, datetime]
    policy: MergePolicy
    read: Mapping[
        str, Any
    ]  # the synced columns as read (not normalised): merged values are written only over them
    held: frozenset[str] = frozenset()  # the fields an open review holds: neither side is written


@dataclass(frozen=True)
class _Attempt:
    """One write on its way to QuickBooks, with what earlier rounds decided about the record."""

    record: _Record
    op: WriteOp
    base: Mapping[str, Any] | None
    conflicts: tuple[ConflictRecord, ...] = ()
    batchly_changes: Mapping[str, Any] = field(default_factory=dict)
    action: str | None = None  # what the outcome is called when it is not the write's operation (a link)


class NameListPusher:
    """Pushes chunks of one name list for one organisation (thread-safe)."""

    def __init__(self, ctx: PushContext, kind: NameList) -> None:
        self.ctx = ctx
        self.kind = kind
        self._income_account: str | None = None
        self._lock = threading.Lock()

    def push(self, ids: Sequence[int]) -> list[Outcome]:
        """Push these records (≤ 30) and return one outcome per record."""
        kind, org = self.kind, self.ctx.organization_id
        with self.ctx.engine.connect() as conn:
            rows = load_rows(conn, kind.entity_type, ids)
            states = {st.entity_id: st for st in load_states(conn, org, kind.entity_type, entity_ids=ids)}
            held = open_conflict_fields(conn, org, kind.entity_type)
            reviewed = review_fields(conn, org, kind.entity_type)
            times = field_change_times(conn, kind.entity_type, rows.values())
        policy = kind.policy.with_rules(**dict.fromkeys(reviewed, Rule.NEEDS_REVIEW))
        outcomes: list[Outcome] = []
        attempts: list[_Attempt] = []
        spilling: list[tuple[_Attempt, Mapping[str, Any], str, str]] = []
        for entity_id in ids:
            row = rows.get(entity_id)
            if row is None:
                outcomes.append(Pushed(kind.entity_type, entity_id, "skip", message="deleted in Batchly"))
                continue
            pending = held.get(entity_id, set()) & set(policy.fields)
            record = _Record(
                entity_id,
                kind.mapping.from_row(row),
                row["updated_at"],
                times.get(entity_id, {}),
                policy.with_rules(**dict.fromkeys(pending, Rule.NEEDS_REVIEW)),
                {name: row[name] for name in kind.mapping.fields},
                frozenset(pending),
            )
            state = states.get(entity_id)
            base = decode_snapshot(kind.entity_type, state.base) if state is not None else None
            changes = changes_to_push(base, record.fields, policy=record.policy, pending=pending)
            issues = [issue for issue in kind.validate(row) if state is None or issue.field in changes]
            if issues:
                message = "; ".join(str(issue) for issue in issues)
                outcomes.append(Failed(kind.entity_type, entity_id, "validate", message, retryable=False))
                continue
            if state is None:
                attempts.append(self._create(record))
                continue
            reverted = owned_reverts(base, record.fields, base or {}, policy=record.policy)
            attempt = _Attempt(
                record,
                self._update_op(entity_id, record.fields, changes, state.qbo_id, state.sync_token),
                base,
                self._conflicts(record, state.qbo_id, None, reverted),
                reverted.to_batchly,
            )
            if changes and self._spills(record, changes, base, pending):
                spilling.append((attempt, changes, state.qbo_id, state.sync_token))
            elif changes:
                attempts.append(attempt)
            elif reverted.conflicts:
                outcomes.append(self._pushed(attempt, "revert", None))
            else:
                outcomes.append(
                    Pushed(kind.entity_type, entity_id, "skip", message="no change since the last sync")
                )
        if spilling:
            # a nested object is sent whole: its members Batchly may not write (held by a review, under review,
            # QuickBooks' to keep) carry QuickBooks' value, read now; still at the link's SyncToken, so a version
            # newer than the link's is met by a 5010 and merged as usual
            read = self.ctx.client.read_many(kind.qbo_entity, [qbo_id for _, _, qbo_id, _ in spilling])
            current = {str(obj["Id"]): obj for obj in read}
            for attempt, sent, qbo_id, sync_token in spilling:
                obj = current.get(qbo_id)
                if obj is not None:
                    record = attempt.record
                    intended = {**kind.mapping.from_qbo(obj), **{c: record.fields[c] for c in sent}}
                    op = self._update_op(record.entity_id, intended, sent, qbo_id, sync_token)
                    attempt = replace(attempt, op=op)
                attempts.append(attempt)
        for _ in range(ROUNDS):
            if not attempts:
                break
            results = self.ctx.client.write_batch([attempt.op for attempt in attempts])
            settled = [
                self._settle(attempt, result) for attempt, result in zip(attempts, results, strict=True)
            ]
            attempts = [item for item in settled if isinstance(item, _Attempt)]
            outcomes += [item for item in settled if not isinstance(item, _Attempt)]
        outcomes += [
            Failed(
                kind.entity_type,
                a.record.entity_id,
                a.op.operation,
                "QuickBooks kept changing it; retrying later",
                True,
            )
            for a in attempts
        ]
        return outcomes

    # -- building writes -------------------------------------------------------------------------------------
    def _create(self, record: _Record) -> _Attempt:
        body = self.kind.mapping.to_qbo(record.fields)
        if self.kind is ITEMS:
            body["IncomeAccountRef"] = {"value": self._income_account_id()}
        request = self._request_id("create", record.entity_id, body)
        return _Attempt(
            record, WriteOp(record.entity_id, self.kind.qbo_entity, "create", body, request), None
        )

    def _spills(
        self,
        record: _Record,
        changes: Iterable[str],
        base: Mapping[str, Any] | None,
        pending: Iterable[str],
    ) -> bool:
        """Whether a sparse update of ``changes`` would send, as a member of a nested object it sends whole, a value
        of Batchly's that is not a change to push: a field held by an open review, or one whose Batchly value is not
        the agreed one (under review, QuickBooks-owned) — QuickBooks' value must be sent for it instead."""
        sent = set(changes)
        specs = self.kind.mapping.specs
        groups = {spec.path[0] for spec in specs if spec.column in sent and len(spec.path) > 1}
        members = {spec.column for spec in specs if len(spec.path) > 1 and spec.path[0] in groups} - sent
        held, agreed = set(pending), base or {}
        return any(m in held or m not in agreed or agreed[m] != record.fields[m] for m in members)

    def _update_op(
        self, entity_id: int, fields: Mapping[str, Any], changes: Iterable[str], qbo_id: str, sync_token: str
    ) -> WriteOp:
        """A sparse update of the ``changes`` columns at ``sync_token``; ``fields`` is the whole intended record
        (a nested object such as BillAddr is sent whole)."""
        body = with_identity(
            self.kind.mapping.to_qbo(fields, only=changes), qbo_id=qbo_id, sync_token=sync_token, sparse=True
        )
        request = self._request_id("update", entity_id, f"{sync_token}:{_digest(body)}")
        return WriteOp(entity_id, self.kind.qbo_entity, "update", body, request)

    def _request_id(self, kind: str, entity_id: int, version: object) -> str:
        return request_id(
            kind, self.kind.entity_type, f"{self.ctx.organization_id}:{entity_id}", _digest(version)
        )

    def _income_account_id(self) -> str:
        """An income account for new items (QuickBooks requires one), looked up once per push."""
        with self._lock:
            if self._income_account is None:
                where = [q.condition("AccountType", "=", "Income"), q.condition("Active", "=", True)]
                rows = self.ctx.client.query(q.select("Account", where, "Id", max_results=1)).rows
                if not rows:
                    raise QboError("the QuickBooks company has no active income account for new items")
                self._income_account = str(rows[0]["Id"])
            return self._income_account

    # -- reading answers -------------------------------------------------------------------------------------
    def _settle(self, attempt: _Attempt, result: WriteResult) -> Outcome | _Attempt:
        kind = self.kind
        if result.ok and result.entity_obj is not None:
            return self._pushed(attempt, attempt.action or attempt.op.operation, result.entity_obj)
        error = result.error or QboError("no answer for this write")
        if isinstance(error, StaleObjectError) and result.current is not None:
            return self._merge(attempt, result.current, attempt.base)
        if isinstance(error, DuplicateNameError) and attempt.op.operation == "create":
            return self._link_duplicate(attempt, error)
        return Failed(
            kind.entity_type, attempt.record.entity_id, attempt.op.operation, describe(error), error.retryable
        )

    def _pushed(
        self,
        attempt: _Attempt,
        action: str,
        obj: Mapping[str, Any] | None,
        base: Mapping[str, Any] | None = None,
    ) -> Outcome:
        """What to store: the link at ``obj`` (none for a revert alone) with the agreed ``base`` (default: ``obj``'s
        fields), the fields Batchly takes, and the conflicts, each named in the log entry. A value Batchly takes
        that its column cannot hold fails the record instead (:meth:`_unstorable`)."""
        problems = unstorable(attempt.batchly_changes, column_rules(self.kind.entity_type))
        if problems:
            return self._unstorable(attempt, action, problems)
        agreed = base if base is not None or obj is None else self.kind.mapping.from_qbo(obj)
        return Pushed(
            self.kind.entity_type,
            attempt.record.entity_id,
            action,
            qbo_obj=obj,
            base=encode_snapshot(agreed) if agreed is not None else None,
            batchly_changes=attempt.batchly_changes,
            batchly_read={name: attempt.record.read[name] for name in attempt.batchly_changes},
            conflicts=attempt.conflicts,
            message=_describe(attempt.conflicts),
        )

    def _unstorable(self, attempt: _Attempt, action: str, problems: Mapping[str, str]) -> Failed:
        """A record whose QuickBooks values (taken by a merge or a revert) include one Batchly's column cannot hold:
        those fields are left out, the others are written, and the record is not acknowledged as synced — its rows
        go to the dead letter with a sentence naming it and each field (every retry would meet the same value)."""
        kind, record = self.kind, attempt.record
        taken = {name: value for name, value in attempt.batchly_changes.items() if name not in problems}
        fields = "; ".join(
            f"{kind.entity_type} {record.entity_id} {column}: QuickBooks' value {why}"
            for column, why in sorted(problems.items())
        )
        return Failed(
            kind.entity_type,
            record.entity_id,
            action,
            f"{fields}; it was not written to Batchly and the record is not synced — correct it in QuickBooks, "
            "then retry it (`batchly-sync queue retry`)",
            retryable=False,
            conflicts=tuple(c for c in attempt.conflicts if c.field not in problems),
            batchly_changes=taken,
            batchly_read={name: record.read[name] for name in taken},
        )

    def _merge(
        self, attempt: _Attempt, current: Mapping[str, Any], base: Mapping[str, Any] | None
    ) -> Outcome | _Attempt:
        """Three-way merge against QuickBooks' current object; push what Batchly still has to say."""
        record = attempt.record
        result = merge(
            base,
            record.fields,
            self.kind.mapping.from_qbo(current),
            batchly_updated_at=record.updated_at,
            qbo_updated_at=qbo_last_updated(current),
            policy=record.policy,
            batchly_changed_at=record.changed_at,
        )
        seen = {
            conflict.field for conflict in result.conflicts
        }  # seen again now: the merge's view replaces it
        merged = replace(
            attempt,
            conflicts=tuple(c for c in attempt.conflicts if c.field not in seen)
            + self._conflicts(record, str(current["Id"]), current, result),
            batchly_changes={
                **{k: v for k, v in attempt.batchly_changes.items() if k not in result.base},
                **result.to_batchly,
            },
        )
        action = "link" if base is None else "update"
        # a field an open review holds is not written to QuickBooks, and its base stays (the merge may see only a
        # Batchly change of it when its base is QuickBooks' value)
        to_qbo = {k: v for k, v in result.to_qbo.items() if k not in record.held}
        agreed = dict(result.base)
        for name in set(result.to_qbo) - set(to_qbo):
            if base is not None and name in base:
                agreed[name] = base[name]
            else:
                agreed.pop(name, None)
        if not to_qbo:
            return self._pushed(merged, action, current, agreed)
        intended = {**self.kind.mapping.from_qbo(current), **to_qbo}
        update = self._update_op(
            merged.record.entity_id, intended, to_qbo, str(current["Id"]), str(current["SyncToken"])
        )
        return replace(merged, op=update, base=agreed, action=action)

    def _link_duplicate(self, attempt: _Attempt, error: QboError) -> Outcome | _Attempt:
        """6240: link to the QuickBooks record of that name when it is the same one, else leave it for review."""
        kind, org = self.kind, self.ctx.organization_id
        name = attempt.op.body[kind.name_field]
        where = q.with_all_active_states(kind.qbo_entity, [q.condition(kind.name_field, "=", name)])
        found = self.ctx.client.query(q.select(kind.qbo_entity, where)).rows
        with self.ctx.engine.connect() as conn:
            linked = {
                st.qbo_id
                for st in load_states(conn, org, kind.entity_type, qbo_ids=[str(o["Id"]) for o in found])
            }
        candidates = {str(obj["Id"]): obj for obj in found if str(obj["Id"]) not in linked}
        if kind is ITEMS and len(candidates) == 1:
            return self._merge(attempt, next(iter(candidates.values())), None)
        if kind is CUSTOMERS:
            match = match_customer(
                attempt.record.fields, {cid: kind.mapping.from_qbo(obj) for cid, obj in candidates.items()}
            )
            if match is not None and match.decision is MatchDecision.LINK:
                return self._merge(attempt, candidates[str(match.candidate_id)], None)
        others = (
            ", ".join(sorted(candidates)) or "a record that is already linked or not a " + kind.entity_type
        )
        conflict = ConflictRecord(
            organization_id=org,
            entity_type=kind.entity_type,
            entity_id=attempt.record.entity_id,
            qbo_id=next(iter(candidates), None),
            field=kind.mapping.specs[0].column,
            base_value=None,
            batchly_value=name,
            qbo_value=name,
            resolution="pending_review",
            batchly_updated_at=attempt.record.updated_at,
            run_id=self.ctx.run_id,
        )
        message = (
            f"{kind.entity_type} {attempt.record.entity_id} {conflict.field}: QuickBooks already has {name!r} "
            f"(Id {others}) and it is not the same {kind.entity_type}; left for review ({error.code})"
        )
        return Failed(
            kind.entity_type,
            attempt.record.entity_id,
            "create",
            message,
            retryable=False,
            conflicts=(conflict,),
        )

    def _conflicts(
        self, record: _Record, qbo_id: str, current: Mapping[str, Any] | None, result: MergeResult
    ) -> tuple[ConflictRecord, ...]:
        """The merge's conflicts as rows; ``current`` is the QuickBooks object merged against (none: the base)."""
        return tuple(
            ConflictRecord(
                organization_id=self.ctx.organization_id,
                entity_type=self.kind.entity_type,
                entity_id=record.entity_id,
                qbo_id=qbo_id,
                field=conflict.field,
                base_value=conflict.base_value,
                batchly_value=conflict.batchly_value,
                qbo_value=conflict.qbo_value,
                resolution=conflict.resolution.value,
                batchly_updated_at=record.changed_at.get(conflict.field, record.updated_at),
                qbo_updated_at=qbo_last_updated(current) if current is not None else None,
                run_id=self.ctx.run_id,
                reason=conflict.reason.value,
            )
            for conflict in result.conflicts
        )


_SETTLED = {
    Resolution.BATCHLY: "Batchly's value kept",
    Resolution.QUICKBOOKS: "QuickBooks' value kept",
    Resolution.PENDING_REVIEW: "left for review",
}


def _describe(conflicts: Sequence[ConflictRecord]) -> str | None:
    """One line naming each conflict and how it was settled (for the sync log)."""
    if not conflicts:
        return None
    parts = []
    for conflict in conflicts:
        resolution = Resolution(conflict.resolution)
        if conflict.reason == "owned_field":
            owner = "QuickBooks" if resolution is Resolution.QUICKBOOKS else "Batchly"
            why = f"{owner} owns it, the other side's edit is reverted"
        else:
            why = "changed on both sides" if conflict.reason == "both_changed" else "first link"
        parts.append(
            f"{conflict.field}: {_SETTLED[resolution]} ({why}; Batchly {conflict.batchly_value!r}, "
            f"QuickBooks {conflict.qbo_value!r})"
        )
    return "conflicts: " + "; ".join(parts)


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]
