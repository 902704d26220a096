"""Reconciling mirrored QuickBooks customers and items into Batchly (DESIGN.md §1).

Only mirror rows whose ``qbo_mirror.version`` differs from the one recorded when they were last reconciled
(``qbo_reconciled``) are read — an equality test, never a comparison of clock stamps, so a mirror write committed after
a concurrent reconciliation read the row keeps a version that reconciliation did not record and is read by the next
one. Every row read records its version in the chunk's transaction, whatever came of it (merged, created, sent to
review, nothing new), so a second run over the same mirror reads nothing. Of the rows read, only the ones with news are
examined: unlinked ones, ones whose SyncToken is newer than the link's, and deletions of
records Batchly still has active. For each, in chunks of one transaction:

- linked: three-way merge against the base (``sync.merge``); what QuickBooks wins is written to Batchly, what Batchly
  wins stays for the push (the base keeps QuickBooks' value for those fields, so the push sees the difference);
- unlinked: matched by name with unlinked Batchly records (``sync.matching`` for customers) — linked when it is the
  same record, flagged for review (a ``link`` conflict) when unsure, created in Batchly otherwise;
- deleted (merged away) in QuickBooks: deactivated in Batchly, never deleted.

Every write goes through :func:`~batchly_pipelines.store.db.sync_transaction`, so nothing echoes back as a push. A
pending review keeps one open ``sync_conflicts`` row per record and field however often it is seen again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchly_pipelines.rules.mapping import (
    CUSTOMER_MAPPING,
    ITEM_MAPPING,
    EntityMapping,
    decode_snapshot,
    encode_snapshot,
)
from batchly_pipelines.rules.matching import Match, MatchDecision, match_customer, normalize_name
from batchly_pipelines.rules.merge import (
    CUSTOMER_POLICY,
    ITEM_POLICY,
    Conflict,
    MergePolicy,
    MergeResult,
    Resolution,
    merge,
)
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.conflicts import ConflictRecord, mark_resolved, record_conflicts
from batchly_pipelines.store.db import sync_transaction
from batchly_pipelines.store.sync_state import LogEntry, SyncState, save_states, write_log
from batchly_pipelines.store.upsert import bulk_upsert

m, st, sc, rc = s.qbo_mirror.c, s.qbo_sync_state.c, s.sync_conflicts.c, s.qbo_reconciled.c
CHUNK = 1000
# who closes a review that later edits made moot
SETTLED_BY = "sync (both sides agree)"
# the conflict "field" of a QuickBooks record waiting for a person to pick its Batchly twin
LINK_FIELD = "link"

Candidates = Mapping[Hashable, Mapping[str, Any]]
Matcher = Callable[[Mapping[str, Any], Candidates], Match | None]


def match_item(subject: Mapping[str, Any], candidates: Candidates) -> Match | None:
    """Item names are unique in QuickBooks: one unlinked Batchly item of that name is the same item."""
    named = tuple(
        cid
        for cid, fields in candidates.items()
        if normalize_name(fields["name"]) == normalize_name(subject["name"])
    )
    if not named:
        return None
    if len(named) == 1:
        return Match(MatchDecision.LINK, named[0], named, "same name")
    return Match(MatchDecision.REVIEW, None, named, "several items with this name")


@dataclass(frozen=True)
class EntityKind:
    """How one synced entity is stored on both sides and reconciled."""

    entity: str  # Batchly name: customer | item
    qbo_entity: str  # QuickBooks name: Customer | Item
    table: sa.Table
    mapping: EntityMapping
    policy: MergePolicy
    name_field: str
    matcher: Matcher


CUSTOMERS = EntityKind(
    "customer", "Customer", s.customers, CUSTOMER_MAPPING, CUSTOMER_POLICY, "display_name", match_customer
)
ITEMS = EntityKind("item", "Item", s.items, ITEM_MAPPING, ITEM_POLICY, "name", match_item)
KINDS: Mapping[str, EntityKind] = {kind.entity: kind for kind in (CUSTOMERS, ITEMS)}


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
    duration_s: float = 0.0

    @property
    def changed(self) -> int:
        """Batchly records created, updated or deactivated."""
        return self.created + self.updated + self.deactivated


@dataclass
class _Chunk:
    """The writes one chunk makes, applied together at the end of its transaction."""

    kind: EntityKind
    organization_id: int
    run_id: str | None
    creates: list[tuple[str, dict[str, Any], SyncState]] = field(default_factory=list)
    updates: dict[int, dict[str, Any]] = field(default_factory=dict)
    states: list[SyncState] = field(default_factory=list)
    conflicts: list[ConflictRecord] = field(default_factory=list)
    settled: dict[int, Any] = field(
        default_factory=dict
    )  # open review id → the value both sides now agree on
    log: list[LogEntry] = field(default_factory=list)

    def note(
        self, action: str, qbo_id: str, entity_id: int | None = None, message: str | None = None
    ) -> None:
        self.log.append(
            LogEntry(
                self.organization_id,
                "pull",
                self.kind.entity,
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
    kind: EntityKind,
    organization_id: int,
    *,
    policy: MergePolicy | None = None,
    run_id: str | None = None,
    only: Sequence[str] | None = None,
) -> ReconcileStats:
    """Bring Batchly in line with the mirrored QuickBooks records of ``kind`` that have news (see module doc);
    ``only`` limits it to those QuickBooks ids, whatever version they were reconciled at."""
    started = time.monotonic()
    stats = ReconcileStats(kind.entity)
    policy = policy or kind.policy
    with engine.connect() as conn:
        unlinked = _unlinked_by_name(conn, kind, organization_id)
    after = ""
    while True:
        with engine.connect() as conn:
            query = _pulled(kind, organization_id, after, every=only is not None)
            if only is not None:
                query = query.where(m.qbo_id.in_(list(only)))
            pulled = [dict(r) for r in conn.execute(query).mappings()]
            if not pulled:
                break
            rows = _with_news(conn, kind, organization_id, pulled)
        after = pulled[-1]["qbo_id"]
        with sync_transaction(engine) as conn:
            if rows:
                chunk = _Chunk(kind, organization_id, run_id)
                _plan(conn, chunk, rows, unlinked, policy, stats)
                _apply(conn, chunk, stats)
            _record_versions(conn, kind, organization_id, pulled)
        stats.examined += len(rows)
    stats.duration_s = round(time.monotonic() - started, 3)
    return stats


def _pulled(kind: EntityKind, organization_id: int, after: str, *, every: bool = False) -> sa.Select[Any]:
    """The next chunk of mirror rows (by ``qbo_id``, the mirror's primary key order) whose version is not the one
    they were last reconciled at — never reconciled ones included; ``every`` reads them whatever their version."""
    joined = s.qbo_mirror.outerjoin(
        s.qbo_reconciled,
        sa.and_(
            rc.organization_id == m.organization_id,
            rc.entity_type == m.entity_type,
            rc.qbo_id == m.qbo_id,
        ),
    )
    query = (
        sa.select(m.qbo_id, m.sync_token, m.last_updated_time, m.deleted, m.data, m.version)
        .select_from(joined)
        .where(m.organization_id == organization_id, m.entity_type == kind.qbo_entity, m.qbo_id > after)
    )
    if not every:
        query = query.where(sa.or_(rc.mirror_version.is_(None), rc.mirror_version != m.version))
    return query.order_by(m.qbo_id).limit(CHUNK)


def _record_versions(
    conn: Connection, kind: EntityKind, organization_id: int, pulled: Sequence[Mapping[str, Any]]
) -> None:
    """Record the mirror version each row read was reconciled at, in the transaction that applied it."""
    bulk_upsert(
        conn,
        s.qbo_reconciled,
        [
            {
                "organization_id": organization_id,
                "entity_type": kind.qbo_entity,
                "qbo_id": row["qbo_id"],
                "mirror_version": row["version"],
            }
            for row in pulled
        ],
        key=("organization_id", "entity_type", "qbo_id"),
    )


def _with_news(
    conn: Connection, kind: EntityKind, organization_id: int, pulled: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The pulled rows with news for Batchly — unlinked, newer than the link, or deleted while still active — each
    with its Batchly twin's id and the link's base."""
    t = kind.table.c
    ids = [row["qbo_id"] for row in pulled]
    twins = {
        qbo_id: (entity_id, active)
        for qbo_id, entity_id, active in conn.execute(
            sa.select(t.qbo_id, t.id, t.is_active).where(
                t.organization_id == organization_id, t.qbo_id.in_(ids)
            )
        ).all()
    }
    links = {
        qbo_id: (token, base)
        for qbo_id, token, base in conn.execute(
            sa.select(st.qbo_id, st.sync_token, st.base).where(
                st.organization_id == organization_id, st.entity_type == kind.entity, st.qbo_id.in_(ids)
            )
        ).all()
    }
    rows = []
    for row in pulled:
        entity_id, active = twins.get(row["qbo_id"], (None, False))
        token, base = links.get(row["qbo_id"], (None, None))
        if row["deleted"]:
            news = bool(active)
        else:
            news = entity_id is None or token is None or int(row["sync_token"]) > int(token)
        if news:
            rows.append({**row, "entity_id": entity_id, "base": base})
    return rows


def _unlinked_by_name(
    conn: Connection, kind: EntityKind, organization_id: int
) -> dict[str, dict[Hashable, dict[str, Any]]]:
    """Batchly records without a QuickBooks twin, by normalised name (id → synced fields)."""
    t = kind.table
    index: dict[str, dict[Hashable, dict[str, Any]]] = {}
    query = sa.select(t).where(t.c.organization_id == organization_id, t.c.qbo_id.is_(None))
    for row in conn.execute(query).mappings():
        fields = kind.mapping.from_row(dict(row))
        index.setdefault(normalize_name(fields[kind.name_field]), {})[row["id"]] = fields
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
    reviewing = _open_links(conn, kind, org, [row["qbo_id"] for row in rows])
    wanted: set[int] = {row["entity_id"] for row in rows if row["entity_id"] is not None}
    matches: dict[str, Match | None] = {}
    for row in rows:
        if row["entity_id"] is None and not row["deleted"]:
            subject = kind.mapping.from_qbo(row["data"])
            named = unlinked.get(normalize_name(subject[kind.name_field]), {})
            match = kind.matcher(subject, named) if named else None
            matches[row["qbo_id"]] = match
            if match is not None and match.decision is MatchDecision.LINK:
                assert isinstance(match.candidate_id, int)
                wanted.add(match.candidate_id)
                named.pop(match.candidate_id)  # one QuickBooks record per Batchly record
    batchly = _load_rows(conn, kind, wanted)
    open_fields = _open_fields(conn, kind, org, wanted)
    for row in rows:
        qbo_id = row["qbo_id"]
        qbo_fields = kind.mapping.from_qbo(row["data"])
        if row["deleted"]:
            chunk.updates[row["entity_id"]] = {"is_active": False}
            chunk.note("deactivate", qbo_id, row["entity_id"], "deleted (merged) in QuickBooks")
            stats.deactivated += 1
            continue
        entity_id = row["entity_id"]
        base = decode_snapshot(kind.entity, row["base"]) if row["base"] is not None else None
        if entity_id is None:
            match = matches[qbo_id]
            if match is None:
                chunk.creates.append((qbo_id, qbo_fields, _state(chunk, 0, row, qbo_fields)))
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
        )
        _settle(chunk, entity_id, row, qbo_fields, current, result, open_fields.get(entity_id, {}), stats)


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
    # a field Batchly wins is still QuickBooks' value until the push sends it: keep that as the base
    base = {**result.base, **{name: qbo_fields[name] for name in result.to_qbo}}
    chunk.states.append(_state(chunk, entity_id, row, base))
    for conflict in result.conflicts:
        if conflict.resolution is Resolution.PENDING_REVIEW and conflict.field in open_fields:
            continue  # already waiting for review: one open row per record and field
        chunk.conflicts.append(_field_conflict(chunk, entity_id, row, current, conflict))
    for name, conflict_id in open_fields.items():
        if name not in result.pending_fields and name in result.base:
            chunk.settled[conflict_id] = result.base[name]  # both sides came to agree: nothing left to review


def _state(chunk: _Chunk, entity_id: int, row: Mapping[str, Any], base: Mapping[str, Any]) -> SyncState:
    return SyncState(
        chunk.organization_id,
        chunk.kind.entity,
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
        entity_type=chunk.kind.entity,
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
    )


def _link_conflict(
    chunk: _Chunk, row: Mapping[str, Any], qbo_fields: Mapping[str, Any], match: Match
) -> ConflictRecord:
    return ConflictRecord(
        organization_id=chunk.organization_id,
        entity_type=chunk.kind.entity,
        entity_id=None,
        qbo_id=row["qbo_id"],
        field=LINK_FIELD,
        base_value=match.reason,
        batchly_value=",".join(str(cid) for cid in match.candidate_ids),
        qbo_value=qbo_fields[chunk.kind.name_field],
        resolution=Resolution.PENDING_REVIEW.value,
        qbo_updated_at=row["last_updated_time"],
        run_id=chunk.run_id,
    )


def _open_links(conn: Connection, kind: EntityKind, organization_id: int, qbo_ids: Sequence[str]) -> set[str]:
    query = sa.select(sc.qbo_id).where(
        sc.organization_id == organization_id,
        sc.entity_type == kind.entity,
        sc.field == LINK_FIELD,
        sc.resolution == Resolution.PENDING_REVIEW.value,
        sc.qbo_id.in_(list(qbo_ids)),
    )
    return set(conn.execute(query).scalars())


def _open_fields(
    conn: Connection, kind: EntityKind, organization_id: int, entity_ids: set[int]
) -> dict[int, dict[str, int]]:
    """Open reviews per Batchly record: field → conflict id."""
    query = sa.select(sc.entity_id, sc.field, sc.id).where(
        sc.organization_id == organization_id,
        sc.entity_type == kind.entity,
        sc.resolution == Resolution.PENDING_REVIEW.value,
        sc.entity_id.in_(sorted(entity_ids)),
    )
    fields: dict[int, dict[str, int]] = {}
    for entity_id, name, conflict_id in conn.execute(query).all():
        fields.setdefault(entity_id, {})[name] = conflict_id
    return fields


def _load_rows(conn: Connection, kind: EntityKind, ids: set[int]) -> dict[int, Mapping[str, Any]]:
    if not ids:
        return {}
    query = sa.select(kind.table).where(kind.table.c.id.in_(sorted(ids)))
    return {row["id"]: dict(row) for row in conn.execute(query).mappings()}


def _apply(conn: Connection, chunk: _Chunk, stats: ReconcileStats) -> None:
    t = chunk.kind.table
    if chunk.creates:
        inserted = conn.execute(
            sa.insert(t).returning(t.c.id, t.c.qbo_id, sort_by_parameter_order=True),
            [
                {"organization_id": chunk.organization_id, "qbo_id": qbo_id, **fields}
                for qbo_id, fields, _ in chunk.creates
            ],
        ).all()
        for (entity_id, qbo_id), (_, _, state) in zip(inserted, chunk.creates, strict=True):
            chunk.states.append(SyncState(**{**vars(state), "entity_id": entity_id}))
            chunk.note("create", qbo_id, entity_id)
        stats.created += len(inserted)
    for entity_id, changes in chunk.updates.items():
        # the app's updated_at keeps meaning "last changed in Batchly": a pull write leaves it alone
        conn.execute(sa.update(t).where(t.c.id == entity_id).values(**changes, updated_at=t.c.updated_at))
    save_states(conn, chunk.states)
    stats.conflicts += record_conflicts(conn, chunk.conflicts)
    for conflict_id, value in chunk.settled.items():
        mark_resolved(conn, conflict_id, winner="value", resolved_by=SETTLED_BY, value=value)
    write_log(conn, chunk.log)
