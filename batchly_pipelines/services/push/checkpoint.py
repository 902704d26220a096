"""Writing a push's outcomes back to Batchly as one checkpoint per chunk (its SQL lives in ``store/``).

A checkpoint is one :func:`~batchly_pipelines.store.db.sync_transaction`: the QuickBooks ids, SyncTokens and merge
bases, the sync-owned invoice columns, conflicts, the sync log and the queue acknowledgements (or failures) commit
together, so a killed run never leaves a record written to QuickBooks but unrecorded in Batchly beyond the chunk
that was in flight — and that chunk is replayed without duplicates (request ids, the DocNumber guard).

On PostgreSQL the transaction is bounded from its first statement by the lease the worker has left (idle inside it,
waiting for a row lock: :func:`~batchly_pipelines.store.db.bound_transaction`): a worker frozen between two
write-backs (SIGSTOP, a pause) loses its session — its write-back is rolled back and the invoice and queue rows it
locked are free — before its lease runs out, and a write-back that would wait longer than that for a row fails
and is asked again; when a frozen worker resumes, its lease is gone and it stops before writing anything more.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.quickbooks.errors import QboError
from batchly_pipelines.quickbooks.wire import qbo_last_updated
from batchly_pipelines.store.conflicts import ConflictRecord, record_conflicts
from batchly_pipelines.store.db import Connection, Engine, WriteRefused, savepoint, sync_transaction
from batchly_pipelines.store.push_rows import write_back
from batchly_pipelines.store.queue import QueueItem, SyncQueue
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines.store.sync_state import LogEntry, SyncState, save_states, write_log

RecordKey = tuple[str, int]  # (entity_type, entity_id)


def link_state(
    organization_id: int, key: RecordKey, obj: Mapping[str, Any], base: Mapping[str, Any]
) -> SyncState:
    """The link of a Batchly record to QuickBooks' ``obj`` (its Id and SyncToken), with the agreed ``base``."""
    return SyncState(
        organization_id=organization_id,
        entity_type=key[0],
        entity_id=key[1],
        qbo_id=str(obj["Id"]),
        sync_token=str(obj["SyncToken"]),
        base=base,
        qbo_updated_at=qbo_last_updated(obj) if obj.get("MetaData") else None,
    )


@dataclass(frozen=True)
class Pushed:
    """A record QuickBooks now holds (or that needed nothing): what to store about it.

    ``hold`` records it without settling its queue rows: one step of a record's push whose outcome comes later (a
    void a create waits for, a lost copy voided before the invoice is created or acknowledged).
    """

    entity_type: str
    entity_id: int
    action: str  # create | update | link | void | skip
    qbo_obj: Mapping[str, Any] | None = None
    base: Mapping[str, Any] | None = None
    batchly_changes: Mapping[str, Any] = field(default_factory=dict)
    batchly_read: Mapping[str, Any] = field(
        default_factory=dict
    )  # what those columns held when read: written only
    # while they still do (an app edit made meanwhile is never overwritten)
    invoice_status: str | None = None  # synced | voided
    conflicts: Sequence[ConflictRecord] = ()
    message: str | None = None
    hold: bool = False

    @property
    def key(self) -> RecordKey:
        return (self.entity_type, self.entity_id)


@dataclass(frozen=True)
class Failed:
    """A record that could not be pushed: its queue rows back off (``retryable``) or go to the dead letter."""

    entity_type: str
    entity_id: int
    action: str
    message: str
    retryable: bool
    invoice_status: str | None = None  # error, for invoices refused by validation
    conflicts: Sequence[ConflictRecord] = ()
    # what the push takes from QuickBooks for it all the same (written only over the values read, as for Pushed)
    batchly_changes: Mapping[str, Any] = field(default_factory=dict)
    batchly_read: Mapping[str, Any] = field(default_factory=dict)
    # False when the record was never sent — it waits for another record to reach QuickBooks first: the attempt
    # counted before its chunk went out is given back, so waiting never uses up the retry budget
    sent: bool = True
    # due again at once, without backoff (what it waited for was sent and is checkpointed with it); not a failure
    # of the run: the push's next claim takes it
    retry_now: bool = False
    # it waits for a record in the dead letter (its customer, an item): due again only after the longest backoff —
    # or as soon as that record is pushed (:meth:`SyncQueue.expedite_waiting_for`)
    parked: bool = False
    # it waits for another invoice of its chain (its correction, the original in another chunk), which this push is
    # pushing: not a failure the push counts against it (``FAILURES_PER_PUSH``), so the push takes it again once
    # that one is settled, not the next run
    waits_here: bool = False

    @property
    def key(self) -> RecordKey:
        return (self.entity_type, self.entity_id)


Outcome = Pushed | Failed


def _refused(outcome: Outcome, refused: WriteRefused) -> Failed:
    """The failure of an outcome the database refused to store: nothing of it is written, its rows go to the dead
    letter (the same refusal would come back on every retry)."""
    key = f"{outcome.entity_type} {outcome.entity_id}"
    return Failed(
        outcome.entity_type,
        outcome.entity_id,
        outcome.action,
        f"{key}: Batchly refused to store the push's outcome ({refused}); nothing of it was written to Batchly and "
        f"the record is not synced — fix the cause, then retry it (`batchly-sync queue retry`)",
        retryable=False,
        invoice_status="error" if outcome.entity_type == "invoice" else None,
    )


@dataclass
class CheckpointResult:
    """What one checkpoint acknowledged and where the failures went."""

    acked: int = 0
    retrying: int = 0
    dead: int = 0
    requeued: int = 0  # due again at once (``Failed.retry_now``): neither settled nor failed


class Checkpointer:
    """Writes outcomes of one organisation's push, each call one transaction."""

    def __init__(
        self,
        engine: Engine,
        queue: SyncQueue,
        organization_id: int,
        run_id: str | None,
        *,
        fence: Callable[[Connection], object] | None = None,
        lease_left: Callable[[], timedelta] | None = None,
    ) -> None:
        self.fence = (
            fence  # raises inside the transaction (its last statement) when this worker may not write back
        )
        # the lease this worker has left, which bounds the transaction (raises when it may not write back)
        self.lease_left = lease_left
        self.engine = engine
        self.queue = queue
        self.organization_id = organization_id
        self.run_id = run_id

    def write(
        self, outcomes: Sequence[Outcome], queue_items: Mapping[RecordKey, Sequence[QueueItem]]
    ) -> CheckpointResult:
        """Store ``outcomes`` and settle their queue rows in one sync transaction.

        An outcome the database refuses to store (a value its column cannot hold, a constraint) fails that record
        alone — dead letter, with a sentence naming it and why — and the others are stored: the outcomes are
        written under one savepoint, and when it is refused, again each under its own."""
        result = CheckpointResult()
        if not outcomes:
            return result
        now = utcnow()
        bound = self.lease_left() if self.lease_left is not None else None
        with sync_transaction(self.engine, idle=bound, lock_wait=bound) as conn:
            try:
                with savepoint(conn):
                    stored = [self._store(conn, outcome, queue_items, now) for outcome in outcomes]
            except WriteRefused:
                stored = [self._store_alone(conn, outcome, queue_items, now) for outcome in outcomes]
            states: list[SyncState] = []
            conflicts: list[ConflictRecord] = []
            log: list[LogEntry] = []
            for outcome, settled, state in stored:
                result.acked += settled.acked
                result.retrying += settled.retrying
                result.requeued += settled.requeued
                result.dead += settled.dead
                states += [state] if state is not None else []
                conflicts += outcome.conflicts
                log.append(self._outcome_log(outcome))
            save_states(conn, states)
            record_conflicts(conn, conflicts)
            write_log(conn, log)
            if self.fence is not None:  # last, so the lock row it holds is held only until the commit
                self.fence(conn)
        return result

    def _store_alone(
        self,
        conn: Connection,
        outcome: Outcome,
        queue_items: Mapping[RecordKey, Sequence[QueueItem]],
        now: datetime,
    ) -> tuple[Outcome, CheckpointResult, SyncState | None]:
        """:meth:`_store` under a savepoint of its own; refused, the record fails instead (:func:`_refused`)."""
        try:
            with savepoint(conn):
                return self._store(conn, outcome, queue_items, now)
        except WriteRefused as refused:
            return self._store(conn, _refused(outcome, refused), queue_items, now)

    def _store(
        self,
        conn: Connection,
        outcome: Outcome,
        queue_items: Mapping[RecordKey, Sequence[QueueItem]],
        now: datetime,
    ) -> tuple[Outcome, CheckpointResult, SyncState | None]:
        """Write one outcome back to its Batchly row and settle its queue rows; the link to save, if any."""
        settled = CheckpointResult()
        items = queue_items.get(outcome.key, ())
        if isinstance(outcome, Failed):
            write_back(
                conn,
                outcome.entity_type,
                outcome.entity_id,
                {"sync_status": outcome.invoice_status},
                outcome.batchly_changes,
                outcome.batchly_read,
            )
            for item in items:
                status = self.queue.fail_in(
                    conn,
                    item,
                    outcome.message,
                    retryable=outcome.retryable,
                    sent=outcome.sent,
                    now=now,
                    retry_now=outcome.retry_now,
                    parked=outcome.parked,
                )
                settled.dead += status == "dead"
                if outcome.retry_now and status == "pending":
                    settled.requeued += 1
                else:
                    settled.retrying += status == "pending"
            return outcome, settled, None
        values: dict[str, Any] = {}
        if outcome.qbo_obj:
            values["qbo_id"] = str(outcome.qbo_obj["Id"])
        if outcome.invoice_status is not None:
            values.update(sync_status=outcome.invoice_status, synced_at=now)
        write_back(
            conn,
            outcome.entity_type,
            outcome.entity_id,
            values,
            outcome.batchly_changes,
            outcome.batchly_read,
        )
        if not outcome.hold:
            settled.acked += SyncQueue.ack(conn, items, now=now)
        if outcome.qbo_obj is not None and outcome.base is not None:
            state = link_state(self.organization_id, outcome.key, outcome.qbo_obj, outcome.base)
            return outcome, settled, state
        return outcome, settled, None

    def _outcome_log(self, outcome: Outcome) -> LogEntry:
        if isinstance(outcome, Failed):
            return self._log(outcome.key, outcome.action, "error", None, outcome.message)
        qbo_id = str(outcome.qbo_obj["Id"]) if outcome.qbo_obj else None
        return self._log(outcome.key, outcome.action, "ok", qbo_id, outcome.message)

    def _log(
        self, key: RecordKey, action: str, outcome: str, qbo_id: str | None, message: str | None
    ) -> LogEntry:
        return LogEntry(
            organization_id=self.organization_id,
            direction="push",
            entity_type=key[0],
            action=action,
            outcome=outcome,
            entity_id=key[1],
            qbo_id=qbo_id,
            message=message,
            run_id=self.run_id,
        )


@dataclass(frozen=True)
class PushContext:
    """What a chunk of work needs: the database, the realm's client, and where to checkpoint outcomes."""

    engine: Engine
    client: QuickBooksClient
    organization_id: int
    run_id: str | None
    checkpoint: Callable[[Sequence[Outcome]], None]


def describe(error: QboError) -> str:
    """A QuickBooks error as one line for the sync log and the queue."""
    return f"QuickBooks refused it: {error}"
