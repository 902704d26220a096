"""Reconciling mirrored QuickBooks customers and items into Batchly (DESIGN.md §1).

Only mirror rows whose ``qbo_mirror.version`` differs from the one recorded when they were last reconciled
(``qbo_reconciled``) are read — an equality test, never a comparison of clock stamps, so a mirror write committed after
a concurrent reconciliation read the row keeps a version that reconciliation did not record and is read by the next
one. Every row read records its version in the chunk's transaction, whatever came of it (merged, created, sent to
review, nothing new), so a second run over the same mirror reads nothing. Of the rows read, only the ones with news are
examined: unlinked ones, ones whose SyncToken is newer than the link's, and deletions of
records Batchly still has active. For each, in batches of :data:`CHUNK` rows, one transaction each:

- linked: three-way merge against the base (``rules.merge``); what QuickBooks wins is written to Batchly, what Batchly
  wins stays for the push (the base keeps QuickBooks' value for those fields, so the push sees the difference);
- unlinked: matched by name with unlinked Batchly records (``rules.matching``) — linked when it is the
  same record, flagged for review (a ``link`` conflict) when unsure, created in Batchly otherwise;
- deleted (merged away) in QuickBooks: deactivated in Batchly, never deleted.

A record with a value Batchly's columns cannot hold (``rules.storage``: a NUL character, a name longer than the column,
a price beyond ``NUMERIC(12,2)``) is left out of its chunk: it goes to the pull's error list (``pull_errors``, one row
per field), its mirror version is not recorded, so the next reconciliation tries it again, and everything else is
written. Storing it later removes its rows from the list.

Every write goes through :func:`~batchly_pipelines.store.db.sync_transaction`, so nothing echoes back as a push. A
pending review keeps one open ``sync_conflicts`` row per record and field however often it is seen again.

Cost and concurrency: each batch is found by two primary-key range scans (mirror versions against reconciled ones)
and read, decided and written with a fixed number of set-based statements (``IN`` lists, bulk inserts and upserts —
COPY on PostgreSQL), so a reconciliation is linear in the rows. The batch's transaction reads its Batchly rows
locked (``SELECT … FOR UPDATE``; SQLite's transactions hold the database) before merging them: an app edit committed
meanwhile waits, then lands on top of what the merge wrote — the outbox queues it and the push sends it — so
reconcile never overwrites a Batchly edit it did not read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchly_pipelines.rules.mapping import decode_snapshot, encode_snapshot
from batchly_pipelines.rules.matching import Match, MatchDecision, normalize_name
from batchly_pipelines.rules.merge import Conflict, MergePolicy, MergeResult, Resolution, Rule, merge
from batchly_pipelines.rules.name_lists import NameList
from batchly_pipelines.rules.storage import unstorable
from batchly_pipelines.services.pull.progress import ProgressMeter, ProgressReport
from batchly_pipelines.store.conflicts import (
    ConflictRecord,
    mark_resolved,
    open_reviews,
    open_reviews_of_qbo_ids,
    record_conflicts,
)
from batchly_pipelines.store.db import Connection, Engine, sync_transaction
from batchly_pipelines.store.field_changes import field_change_times
from batchly_pipelines.store.mirror import (
    mirror_rows,
    record_reconciled,
    unreconciled_estimate,
    unreconciled_ids,
)
from batchly_pipelines.store.outbox import enqueue_updates
from batchly_pipelines.store.pull_errors import PullError, clear_errors, record_errors
from batchly_pipelines.store.records import (
    column_rules,
    insert_records,
    lock_rows,
    twins,
    unlinked_rows,
    write_fields,
)
from batchly_pipelines.store.statistics import GrowingTables
from batchly_pipelines.store.sync_state import (
    LogEntry,
    SyncState,
    insert_states,
    load_states,
    save_states,
    write_log,
)

CHUNK = 1000
# who closes a review that later edits made moot
SETTLED_BY = "sync (both sides agree)"
# the conflict "field" of a QuickBooks record waiting for a person to pick its Batchly twin
LINK_FIELD = "link"


@dataclass
class ReconcileStats:
    """What one reconciliation did in Batchly."""

    entity: str
    examined: int = 0
    created: int = 0
    updated: int = 0
    linked: int = 0
    deactivated: int = 0
    conflicts: int = 0
    review: int = 0
    errors: int = 0  # records Batchly cannot store (listed in pull_errors)
    duration_s: float = 0.0

    @property
    def changed(self) -> int:
        """Batchly records created, updated or deactivated."""
        return self.created + self.updated + self.deactivated

    def add(self, other: ReconcileStats) -> None:
        """Count ``other``'s records in too (its duration aside)."""
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


COUNTS = ("examined", "created", "updated", "linked", "deactivated", "conflicts", "review", "errors")


@dataclass
class _Chunk:
    """The writes one chunk makes, applied together at the end of its transaction."""

    kind: NameList
    organization_id: int
    run_id: str | None
    creates: list[tuple[str, dict[str, Any], Mapping[str, Any]]] = field(
        default_factory=list
    )  # id, fields, row
    updates: dict[int, dict[str, Any]] = field(default_factory=dict)
    states: list[SyncState] = field(default_factory=list)
    conflicts: list[ConflictRecord] = field(default_factory=list)
    settled: dict[int, Any] = field(
        default_factory=dict
    )  # open review id → the value both sides now agree on
    log: list[LogEntry] = field(default_factory=list)
    errors: list[PullError] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)  # QuickBooks ids left out: Batchly cannot store them
    pushes: set[int] = field(
        default_factory=set
    )  # records with something for QuickBooks: queued for the push

    def note(
        self, action: str, qbo_id: str, entity_id: int | None = None, message: str | None = None
    ) -> None:
        self.log.append(
            LogEntry(
                self.organization_id,
                "pull",
                self.kind.entity_type,
                action,
                "ok",
                entity_id,
                qbo_id,
                message,
                self.run_id,
            )
        )


def reconcile(
    engine: Engine,
    kind: NameList,
    organization_id: int,
    *,
    policy: MergePolicy | None = None,
    run_id: str | None = None,
    only: Sequence[str] | None = None,
    progress: ProgressReport | None = None,
) -> ReconcileStats:
    """Bring Batchly in line with the mirrored QuickBooks records of ``kind`` that have news (see module doc);
    ``only`` limits it to those QuickBooks ids, whatever version they were reconciled at. ``progress`` hears the
    rows reconciled of the rows waiting (estimated from the mirror's and the reconciled versions' counts)."""
    if only is not None:
        wanted = sorted(set(only))
        reconciler = Reconciler(
            engine, kind, organization_id, policy=policy, run_id=run_id, progress=progress, total=len(wanted)
        )
        for start in range(0, len(wanted), CHUNK):
            reconciler.batch(wanted[start : start + CHUNK])
        return reconciler.finish()
    reconciler = Reconciler(engine, kind, organization_id, policy=policy, run_id=run_id, progress=progress)
    reconciler.unreconciled()
    return reconciler.finish()


class Reconciler:
    """One reconciliation of ``kind`` for an organisation, a batch at a time: the batches share the index of the
    unlinked Batchly records by name (read once, at the start), the counts and the progress meter.

    :func:`reconcile` runs one over every mirror row with news. ``services.pull.overlap`` runs one alongside the
    mirror: :meth:`batch` with ``defer_named`` over the rows each page wrote, while the pages arrive, then
    :meth:`unreconciled` once the mirror is done. A batch with ``defer_named`` leaves out (unrecorded, so the final
    pass takes them) the unlinked rows whose name some unlinked Batchly record has: matching hands each Batchly
    record to the first QuickBooks record that claims it, so those are decided in the final pass, in the mirror's
    key order, exactly as a reconciliation after the mirror decides them; every other row's outcome does not depend
    on the order the rows come in — nor on which batch commits first, so batches with ``defer_named`` may run in
    several threads at once (over disjoint ids: the index is only read then). A row Batchly cannot store is tried
    once per reconciliation: the final pass skips it while its mirror version is the one that failed.
    """

    def __init__(
        self,
        engine: Engine,
        kind: NameList,
        organization_id: int,
        *,
        policy: MergePolicy | None = None,
        run_id: str | None = None,
        progress: ProgressReport | None = None,
        total: int | None = None,
        growing: GrowingTables | None = None,
    ) -> None:
        self.started = time.monotonic()
        self.engine, self.kind, self.organization_id = engine, kind, organization_id
        self.policy = policy or kind.policy
        self.run_id = run_id
        self.stats = ReconcileStats(kind.entity_type)
        with engine.connect() as conn:
            self.unlinked = _unlinked_by_name(conn, kind, organization_id)
            if total is None:
                total = unreconciled_estimate(conn, organization_id, kind.qbo_entity)
        self.meter = ProgressMeter(f"reconcile {kind.entity_type}", "rows", progress, total=total)
        # the planner keeps up with an import
        self.growing = growing or GrowingTables.of_reconcile(engine, kind.entity_type)
        self._failed: dict[str, str] = {}  # QuickBooks id → the mirror version Batchly could not store
        self._lock = threading.Lock()  # batches with ``defer_named`` may run in several threads at once

    def batch(
        self,
        ids: Sequence[str],
        *,
        defer_named: bool = False,
        known: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
    ) -> int:
        """Reconcile the mirror rows of ``ids`` (at most :data:`CHUNK`) in one transaction, their Batchly rows
        locked from the first read: an app edit committed meanwhile waits and lands after, never overwritten by a
        merge that did not see it. With ``defer_named``, unlinked rows a name match could claim are left for a
        later pass (see the class doc). ``known``: QuickBooks id → (mirror version, the synced fields of the object
        written at it, as ``kind.mapping.from_qbo`` maps them), from the mirror that wrote them — a row still at that
        version is not read back from the mirror's JSON. Returns how many rows were left for later."""
        kind, org = self.kind, self.organization_id
        with sync_transaction(self.engine) as conn:
            pulled = [
                row
                for row in _mirror_rows(conn, org, kind.qbo_entity, ids, known)
                if self._failed.get(row["qbo_id"]) != row["version"]
            ]
            rows = _with_news(conn, kind, org, pulled)
            later: set[str] = set()
            if defer_named and self.unlinked:
                later = {
                    row["qbo_id"]
                    for row in rows
                    if row["entity_id"] is None
                    and not row["deleted"]
                    and self.unlinked.get(normalize_name(row["fields"][kind.name_column]))
                }
                rows = [row for row in rows if row["qbo_id"] not in later]
            chunk = _Chunk(kind, org, self.run_id)
            counted = ReconcileStats(kind.entity_type)  # this batch's, added once it committed
            if rows:
                _plan(conn, chunk, rows, self.unlinked, self.policy, counted)
                _apply(conn, chunk, counted)
            stored = [
                row for row in pulled if row["qbo_id"] not in chunk.failed and row["qbo_id"] not in later
            ]
            record_reconciled(conn, org, kind.qbo_entity, stored)
            clear_errors(conn, org, kind.qbo_entity, (row["qbo_id"] for row in stored))
            record_errors(conn, chunk.errors)
        self._failed.update(
            (row["qbo_id"], row["version"]) for row in pulled if row["qbo_id"] in chunk.failed
        )
        counted.examined += len(rows)
        counted.errors += len(chunk.failed)
        with self._lock:
            self.stats.add(counted)
            self.growing.wrote(len(ids))
        self.meter.add(len(ids) - len(later), len(ids) - len(later))
        return len(later)

    def unreconciled(self) -> None:
        """Reconcile every mirror row whose version was not reconciled yet, scanned in key order (linear in the
        mirror's rows)."""
        for ids in _unreconciled_batches(self.engine, self.kind, self.organization_id):
            self.batch(ids)

    def estimate(self, total: int) -> None:
        """Correct the rows expected (a mirror still running learns how many it will write)."""
        self.meter.estimate(max(total, self.meter.done))

    def finish(self) -> ReconcileStats:
        """The counts, its progress reported as finished."""
        self.meter.finish()
        self.stats.duration_s = round(time.monotonic() - self.started, 3)
        return self.stats


def _mirror_rows(
    conn: Connection,
    organization_id: int,
    entity: str,
    ids: Sequence[str],
    known: Mapping[str, tuple[str, Mapping[str, Any]]] | None,
) -> list[dict[str, Any]]:
    """The mirror rows of ``ids``: with their synced ``fields`` from ``known`` where the row is still at the
    version ``known`` names, with their ``data`` read from the mirror otherwise."""
    if not known:
        return mirror_rows(conn, organization_id, entity, ids)
    rows = mirror_rows(conn, organization_id, entity, ids, data=False)
    stale = []
    for row in rows:
        version, fields = known.get(row["qbo_id"], (None, None))
        if version is not None and version == row["version"]:
            row["fields"] = fields
        else:
            stale.append(row["qbo_id"])
    if not stale:
        return rows
    read = {row["qbo_id"]: row for row in mirror_rows(conn, organization_id, entity, stale)}
    return [
        row if "fields" in row else read[row["qbo_id"]]
        for row in rows
        if "fields" in row or row["qbo_id"] in read
    ]


# mirror keys looked at per scan for unreconciled versions (batches of CHUNK are cut from what it finds)
SCAN = 10 * CHUNK


def _unreconciled_batches(engine: Engine, kind: NameList, organization_id: int) -> Iterator[list[str]]:
    """The QuickBooks ids whose mirror version was not reconciled yet, a batch at a time, scanned in key order
    (:data:`SCAN` keys per look: linear in the mirror's rows)."""
    after: str | None = ""
    while after is not None:
        with engine.connect() as conn:
            ids, after = unreconciled_ids(conn, organization_id, kind.qbo_entity, after, SCAN)
        for start in range(0, len(ids), CHUNK):
            yield ids[start : start + CHUNK]


def _with_news(
    conn: Connection, kind: NameList, organization_id: int, pulled: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The pulled rows with news for Batchly — unlinked, newer than the link, or deleted while still active — each
    with its Batchly twin's id, the link's base and QuickBooks' values as Batchly fields (``fields``)."""
    ids = [row["qbo_id"] for row in pulled]
    linked = twins(conn, kind.entity_type, organization_id, ids, lock=True)
    links = {
        state.qbo_id: (state.sync_token, state.base)
        for state in load_states(conn, organization_id, kind.entity_type, qbo_ids=ids)
    }
    rows = []
    for row in pulled:
        entity_id, active = linked.get(row["qbo_id"], (None, False))
        token, base = links.get(row["qbo_id"], (None, None))
        if row["deleted"]:
            news = bool(active)
        else:
            news = entity_id is None or token is None or int(row["sync_token"]) > int(token)
        if news:  # QuickBooks' values mapped once (by the mirror's hand-over, or here), for every use below
            fields = row["fields"] if "fields" in row else kind.mapping.from_qbo(row["data"])
            rows.append({**row, "entity_id": entity_id, "base": base, "fields": fields})
    return rows


def _unlinked_by_name(
    conn: Connection, kind: NameList, organization_id: int
) -> dict[str, dict[Hashable, dict[str, Any]]]:
    """Batchly records without a QuickBooks twin, by normalised name (id → synced fields)."""
    index: dict[str, dict[Hashable, dict[str, Any]]] = {}
    for row in unlinked_rows(conn, kind.entity_type, organization_id):
        fields = kind.mapping.from_row(row)
        index.setdefault(normalize_name(fields[kind.name_column]), {})[row["id"]] = fields
    return index


def _plan(
    conn: Connection,
    chunk: _Chunk,
    rows: Sequence[Mapping[str, Any]],
    unlinked: dict[str, dict[Hashable, dict[str, Any]]],
    policy: MergePolicy,
    stats: ReconcileStats,
) -> None:
    kind, org = chunk.kind, chunk.organization_id
    rows = [row for row in rows if _storable(chunk, row, policy)]
    wanted: set[int] = {row["entity_id"] for row in rows if row["entity_id"] is not None}
    matches: dict[str, Match | None] = {}
    for row in rows:
        if row["entity_id"] is None and not row["deleted"]:
            subject = row["fields"]
            named = unlinked.get(normalize_name(subject[kind.name_column]), {})
            match = kind.matcher(subject, named) if named else None
            matches[row["qbo_id"]] = match
            if match is not None and match.decision is MatchDecision.LINK:
                assert isinstance(match.candidate_id, int)
                wanted.add(match.candidate_id)
                named.pop(match.candidate_id)  # one QuickBooks record per Batchly record
    # only a record a person is asked to link can have a link review open already
    unsure = [qbo_id for qbo_id, match in matches.items() if match and match.decision is MatchDecision.REVIEW]
    reviewing = open_reviews_of_qbo_ids(conn, org, kind.entity_type, LINK_FIELD, unsure) if unsure else set()
    batchly = lock_rows(conn, kind.entity_type, wanted)
    changed_at = field_change_times(conn, kind.entity_type, batchly.values())
    open_fields = open_reviews(conn, org, kind.entity_type, wanted) if wanted else {}
    for row in rows:
        qbo_id = row["qbo_id"]
        qbo_fields = row["fields"]
        if row["deleted"]:
            chunk.updates[row["entity_id"]] = {"is_active": False}
            chunk.note("deactivate", qbo_id, row["entity_id"], "deleted (merged) in QuickBooks")
            stats.deactivated += 1
            continue
        entity_id = row["entity_id"]
        base = decode_snapshot(kind.entity_type, row["base"]) if row["base"] is not None else None
        if entity_id is None:
            match = matches[qbo_id]
            if match is None:
                chunk.creates.append((qbo_id, qbo_fields, row))
                continue
            if match.decision is MatchDecision.REVIEW:
                if qbo_id not in reviewing:
                    chunk.conflicts.append(_link_conflict(chunk, row, qbo_fields, match))
                    chunk.note("review", qbo_id, None, match.reason)
                    stats.review += 1
                continue
            assert isinstance(match.candidate_id, int)
            entity_id = match.candidate_id
            chunk.note("link", qbo_id, entity_id, match.reason)
            stats.linked += 1
        current = batchly[entity_id]
        result = merge(
            base,
            kind.mapping.from_row(current),
            qbo_fields,
            batchly_updated_at=current["updated_at"],
            qbo_updated_at=row["last_updated_time"],
            policy=policy,
            batchly_changed_at=changed_at[entity_id],
        )
        _settle(chunk, entity_id, row, qbo_fields, current, result, open_fields.get(entity_id, {}), stats)


def _storable(chunk: _Chunk, row: Mapping[str, Any], policy: MergePolicy) -> bool:
    """Whether Batchly's columns can hold the record's QuickBooks values; if not, list each value that does not fit
    (the record is then left out of the chunk). A linked record's fields Batchly owns are never written from
    QuickBooks, so what QuickBooks holds there blocks nothing."""
    if row["deleted"]:
        return True  # deactivating writes nothing QuickBooks sent
    kind = chunk.kind
    fields = row["fields"]
    if row["entity_id"] is not None:
        fields = {k: v for k, v in fields.items() if policy.rule_for(k) is not Rule.BATCHLY_OWNS}
    values = {**fields, "qbo_id": row["qbo_id"]}
    problems = unstorable(values, column_rules(kind.entity_type))
    for column, why in problems.items():
        message = f"{column} {why}"
        chunk.errors.append(
            PullError(
                chunk.organization_id,
                kind.qbo_entity,
                row["qbo_id"],
                column,
                message,
                row["entity_id"],
                chunk.run_id,
            )
        )
        chunk.log.append(
            LogEntry(
                chunk.organization_id,
                "pull",
                kind.entity_type,
                "store",
                "error",
                row["entity_id"],
                row["qbo_id"],
                message,
                chunk.run_id,
            )
        )
    if problems:
        chunk.failed.add(row["qbo_id"])
    return not problems


def _settle(
    chunk: _Chunk,
    entity_id: int,
    row: Mapping[str, Any],
    qbo_fields: Mapping[str, Any],
    current: Mapping[str, Any],
    result: MergeResult,
    open_fields: Mapping[str, int],
    stats: ReconcileStats,
) -> None:
    """Queue the merge's Batchly writes, its new link and base, and its conflicts (pending ones once)."""
    changes = dict(result.to_batchly)
    if current["qbo_id"] != row["qbo_id"]:
        changes["qbo_id"] = row["qbo_id"]
    if changes:
        chunk.updates[entity_id] = changes
    if result.to_batchly:
        chunk.note(
            "update", row["qbo_id"], entity_id, "from QuickBooks: " + ", ".join(sorted(result.to_batchly))
        )
        stats.updated += 1
    # a field Batchly wins is still QuickBooks' value until the push sends it: keep that as the base, and queue the
    # push (a QuickBooks edit of a field Batchly owns or a first link Batchly wins has no app write that queued it)
    base = {**result.base, **{name: qbo_fields[name] for name in result.to_qbo}}
    chunk.states.append(_state(chunk, entity_id, row, base))
    if result.to_qbo:
        chunk.pushes.add(entity_id)
    for conflict in result.conflicts:  # a review already open is refreshed with the values seen now
        chunk.conflicts.append(_field_conflict(chunk, entity_id, row, current, conflict))
    for name, conflict_id in open_fields.items():
        if name not in result.pending_fields and name in result.base:
            chunk.settled[conflict_id] = result.base[name]  # both sides came to agree: nothing left to review


def _state(chunk: _Chunk, entity_id: int, row: Mapping[str, Any], base: Mapping[str, Any]) -> SyncState:
    return SyncState(
        chunk.organization_id,
        chunk.kind.entity_type,
        entity_id,
        row["qbo_id"],
        row["sync_token"],
        encode_snapshot(base),
        row["last_updated_time"],
    )


def _field_conflict(
    chunk: _Chunk, entity_id: int, row: Mapping[str, Any], current: Mapping[str, Any], conflict: Conflict
) -> ConflictRecord:
    return ConflictRecord(
        organization_id=chunk.organization_id,
        entity_type=chunk.kind.entity_type,
        entity_id=entity_id,
        qbo_id=row["qbo_id"],
        field=conflict.field,
        base_value=conflict.base_value,
        batchly_value=conflict.batchly_value,
        qbo_value=conflict.qbo_value,
        resolution=conflict.resolution.value,
        batchly_updated_at=current["updated_at"],
        qbo_updated_at=row["last_updated_time"],
        run_id=chunk.run_id,
        reason=conflict.reason.value,
    )


def _link_conflict(
    chunk: _Chunk, row: Mapping[str, Any], qbo_fields: Mapping[str, Any], match: Match
) -> ConflictRecord:
    return ConflictRecord(
        organization_id=chunk.organization_id,
        entity_type=chunk.kind.entity_type,
        entity_id=None,
        qbo_id=row["qbo_id"],
        field=LINK_FIELD,
        base_value=match.reason,
        batchly_value=",".join(str(cid) for cid in match.candidate_ids),
        qbo_value=qbo_fields[chunk.kind.name_column],
        resolution=Resolution.PENDING_REVIEW.value,
        qbo_updated_at=row["last_updated_time"],
        run_id=chunk.run_id,
    )


def _apply(conn: Connection, chunk: _Chunk, stats: ReconcileStats) -> None:
    entity_type = chunk.kind.entity_type
    if chunk.creates:
        inserted = insert_records(
            conn,
            entity_type,
            chunk.organization_id,
            [(qbo_id, fields) for qbo_id, fields, _ in chunk.creates],
        )
        links = []
        for (entity_id, qbo_id), (_, fields, row) in zip(inserted, chunk.creates, strict=True):
            links.append(_state(chunk, entity_id, row, fields))
            chunk.note("create", qbo_id, entity_id)
        insert_states(conn, links)  # records just created have no link to move
        stats.created += len(inserted)
    for entity_id, changes in chunk.updates.items():
        write_fields(conn, entity_type, entity_id, changes)
    save_states(conn, chunk.states)
    enqueue_updates(conn, chunk.organization_id, entity_type, sorted(chunk.pushes))
    stats.conflicts += record_conflicts(conn, chunk.conflicts)
    for conflict_id, value in chunk.settled.items():
        mark_resolved(conn, conflict_id, winner="value", resolved_by=SETTLED_BY, value=value)
    write_log(conn, chunk.log)
