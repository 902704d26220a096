"""Reading what QuickBooks changed in a window into ``qbo_mirror``, page by page, with CDC for deletions.

Windows are read with keyset paging on ``(MetaData.LastUpdatedTime, Id)``: each page starts at the newest second of
the previous one (``>=``) and skips the versions — ``(Id, SyncToken)`` — already seen in that second. A row that
changes while the window is read moves to a later second with a new SyncToken and is met again, never skipped (an
edited row is not dropped for having been seen at its old time); only the versions of one second are held in memory.

More than a page of rows in one second is read by position inside that second (ordered by Id). A row edited during
that read leaves the second and shifts the rows after it down a position, so one pass alone can miss an untouched
row: the second is re-read until a whole pass ran while its ``COUNT(*)`` did not move and the pass met exactly that
many distinct rows (at most ``SECOND_PASSES`` passes; past that the pull fails before its cursor moves).

A mirror row is written only when QuickBooks has a new version of it (another SyncToken, or a deletion), so pulling
the same window twice writes nothing (:mod:`batchly_pipelines.store.mirror` versions the rows).

How far a window was read is QuickBooks' own clock, never ours: every answer's ``time`` is noted on a
:class:`ServerClock`, and a row changed before the last page was asked for is met by the paging (a row edited while
the window is read moves to a later second, at or after where the paging stands).

Deletions come from CDC (within its 30 days). A saturated CDC answer is split by entity and by time (the client does
it); when more than a whole answer of one entity shares one second, no split can page past it, and that entity's
deletions are found by absence instead: every id the mirror holds live (and, for invoices, every id Batchly links) is
read with ``Id IN`` and the ones QuickBooks no longer has are deleted. A CDC deletion of an object the mirror never
held is recorded too (a tombstone row), so an invoice deleted before any pull mirrored it is still settled.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from batchly_pipelines.quickbooks import query as q
from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.quickbooks.errors import QboError
from batchly_pipelines.quickbooks.wire import qbo_last_updated
from batchly_pipelines.store.db import Connection, Engine
from batchly_pipelines.store.invoice_payments import linked_invoice_ids
from batchly_pipelines.store.mirror import live_ids, mark_deleted, write_versions
from batchly_pipelines.store.schema import utcnow

logger = logging.getLogger(__name__)

ORDER = "MetaData.LastUpdatedTime, Id"
CDC_REACH = timedelta(days=30)
CDC_SATURATED = "CDC saturated"  # the client's QboError detail when one second holds more than a CDC answer
CDC_MARGIN = timedelta(minutes=10)  # stay clear of the 30-day edge: QuickBooks refuses older changedSince
# reads by position of one crowded second before giving up (the pull then fails, its cursor unmoved)
SECOND_PASSES = 5

Version = tuple[str, str]  # (Id, SyncToken): one version of one QuickBooks object


class ServerClock:
    """The latest QuickBooks ``time`` among the answers of one read (thread-safe: pages are prefetched)."""

    def __init__(self) -> None:
        self.latest: datetime | None = None
        self._lock = threading.Lock()

    def saw(self, moment: datetime | None) -> None:
        """Note the ``time`` of one answer (None: the answer carried none)."""
        if moment is None:
            return
        with self._lock:
            if self.latest is None or moment > self.latest:
                self.latest = moment


class IncompleteSecond(RuntimeError):
    """A crowded second kept changing while it was read by position: some of its rows may not have been read."""


def version_of(obj: Mapping[str, Any]) -> Version:
    """``(Id, SyncToken)`` of a QuickBooks object."""
    return str(obj["Id"]), str(obj["SyncToken"])


@dataclass(frozen=True)
class Window:
    """A half-open interval of QuickBooks ``LastUpdatedTime``: ``[start, end)``, aware UTC datetimes."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"empty window: {self.start.isoformat()} … {self.end.isoformat()}")

    def conditions(self, entity: str) -> list[str]:
        """The query conditions selecting the window, inactive name-list rows included."""
        return q.with_all_active_states(
            entity,
            [
                q.condition("MetaData.LastUpdatedTime", ">=", self.start),
                q.condition("MetaData.LastUpdatedTime", "<", self.end),
            ],
        )


def changed_pages(
    client: QuickBooksClient, entity: str, window: Window, clock: ServerClock | None = None
) -> Iterator[list[dict[str, Any]]]:
    """Every object of ``entity`` updated in ``window``, one page at a time, each version (Id, SyncToken) once;
    ``clock`` notes QuickBooks' time of every answer."""
    clock = clock or ServerClock()
    cursor = window.start
    seen_at_cursor: set[Version] = set()
    while True:
        where = Window(cursor, window.end).conditions(entity)
        answer = client.query(q.select(entity, where, ORDER, 1, q.MAX_RESULTS))
        clock.saw(answer.server_time)
        page = answer.rows
        fresh = [obj for obj in page if version_of(obj) not in seen_at_cursor]
        if fresh:
            yield fresh
        if len(page) < q.MAX_RESULTS:
            return
        newest = qbo_last_updated(page[-1])
        if newest == cursor:  # a whole page inside one second: read that second by position
            yield from _one_second(client, entity, cursor, seen_at_cursor, clock)
            cursor, seen_at_cursor = cursor + timedelta(seconds=1), set()
            if cursor >= window.end:  # that second was the window's last
                return
            continue
        cursor, seen_at_cursor = newest, {version_of(obj) for obj in page if qbo_last_updated(obj) == newest}


def prefetched(pages: Iterator[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
    """``pages``, with the next page fetched in a thread while the caller stores the current one (two pages in
    memory at most). A fetch error is raised where the caller would have got that page; a caller that stops early
    stops the thread."""
    Item = tuple[list[dict[str, Any]] | None, BaseException | None]
    ahead: queue.Queue[Item] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def hand_over(item: Item) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fetch() -> None:
        try:
            for page in pages:
                if not hand_over((page, None)):
                    return
            hand_over((None, None))
        except BaseException as exc:  # handed to the consumer, raised there
            hand_over((None, exc))

    worker = threading.Thread(target=fetch, name="qbo-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            page, error = ahead.get()
            if error is not None:
                raise error
            if page is None:
                return
            yield page
    finally:
        stop.set()
        worker.join()


def _one_second(
    client: QuickBooksClient, entity: str, second: datetime, skip: set[Version], clock: ServerClock
) -> Iterator[list[dict[str, Any]]]:
    """Every row of one crowded second not in ``skip``, read by position until a pass is known complete.

    A pass is complete when the second's ``COUNT(*)`` was the same before and after it and the pass met that many
    distinct ids: rows only leave a past second (an edit moves a row to the present), so an unchanged count means
    no row left during the pass and no position shifted. Rows that left are met later in the window, at their new
    time."""
    where = Window(second, second + timedelta(seconds=1)).conditions(entity)
    before = client.count(entity, where)
    for _ in range(SECOND_PASSES):
        ids: set[str] = set()
        start = 1
        while True:
            answer = client.query(q.select(entity, where, "Id", start, q.MAX_RESULTS))
            clock.saw(answer.server_time)
            page = answer.rows
            ids.update(str(obj["Id"]) for obj in page)
            fresh = [obj for obj in page if version_of(obj) not in skip]
            skip.update(version_of(obj) for obj in fresh)
            if fresh:
                yield fresh
            if len(page) < q.MAX_RESULTS:
                break
            start += q.MAX_RESULTS
        after = client.count(entity, where)
        if before == len(ids) == after:
            return
        logger.info(
            "%s second %s changed while read (%s rows before, %s read, %s after): reading it again",
            entity,
            second.isoformat(),
            before,
            len(ids),
            after,
        )
        before = after
    raise IncompleteSecond(
        f"{entity} rows of the second {second.isoformat()} kept changing over {SECOND_PASSES} reads; pull again"
    )


def store_objects(
    conn: Connection,
    organization_id: int,
    entity: str,
    objects: Sequence[Mapping[str, Any]],
    *,
    force: bool = False,
) -> list[Mapping[str, Any]]:
    """Write the objects QuickBooks has a newer version of than the mirror (with ``force`` also the same version
    again; never an older one, whichever read lands last); returns those written."""
    if not objects:
        return []
    written = write_versions(
        conn, organization_id, entity, ((obj, qbo_last_updated(obj)) for obj in objects), force=force
    )
    return [obj for obj in objects if obj["Id"] in written]


def _deleted_at(tombstones: Iterable[Mapping[str, Any]]) -> dict[str, datetime]:
    """When QuickBooks deleted each of these CDC tombstones, by id."""
    return {obj["Id"]: qbo_last_updated(obj) for obj in tombstones}


def cdc_since(window: Window, now: datetime | None = None) -> datetime | None:
    """Where CDC should start to see the window's deletions, or None when the window is out of CDC's reach."""
    earliest = (now or utcnow()) - CDC_REACH + CDC_MARGIN
    if window.end <= earliest:
        return None
    return max(window.start, earliest)


@dataclass
class Deletions:
    """What one look for deletions found: per entity, the last known data of each object newly recorded deleted,
    and the QuickBooks time up to which CDC saw every deletion (None when it was not asked: out of reach, or
    deletions found by absence)."""

    objects: dict[str, list[dict[str, Any]]]
    seen_until: datetime | None = None


def pull_deletions(
    engine: Engine, client: QuickBooksClient, organization_id: int, entities: Sequence[str], window: Window
) -> Deletions:
    """Record what QuickBooks deleted since the window's start (when within CDC's 30 days), mirrored or not; an
    entity whose changes crowd one second past a CDC answer is checked by absence instead (see module doc)."""
    since = cdc_since(window)
    if since is None:
        return Deletions({entity: [] for entity in entities})
    gone: dict[str, dict[str, datetime]] = {}
    marks: list[datetime] = []
    try:
        answers = [(list(entities), client.cdc(entities, since))]
    except QboError as exc:
        if exc.detail != CDC_SATURATED:
            raise
        answers = []
        for entity in entities:  # the client split the group already; ask each alone to keep what can be read
            try:
                answers.append(([entity], client.cdc([entity], since)))
            except QboError as single:
                if single.detail != CDC_SATURATED:
                    raise
                logger.warning(
                    "organisation %s: %s; looking for deleted %s by absence", organization_id, single, entity
                )
                gone[entity] = _absent(engine, client, organization_id, entity)
    for group, result in answers:
        marks.append(result.high_water_mark)
        for entity in group:
            tombstones = (obj for obj in result.objects.get(entity, []) if obj.get("status") == "Deleted")
            gone[entity] = _deleted_at(tombstones)
    with engine.begin() as conn:
        objects = {
            entity: mark_deleted(conn, organization_id, entity, gone.get(entity, {})) for entity in entities
        }
    covered = {entity for group, _ in answers for entity in group}
    return Deletions(objects, min(marks) if covered == set(entities) else None)


def _absent(
    engine: Engine, client: QuickBooksClient, organization_id: int, entity: str
) -> dict[str, datetime]:
    """The ids Batchly knows of ``entity`` (live in the mirror; for invoices, linked too) that QuickBooks no
    longer has, each with when that was seen."""
    with engine.connect() as conn:
        known = set(live_ids(conn, organization_id, entity))
        if entity == "Invoice":
            known.update(linked_invoice_ids(conn, organization_id))
    if not known:
        return {}
    found = {str(obj["Id"]) for obj in client.read_many(entity, sorted(known))}
    seen = utcnow()
    return {qbo_id: seen for qbo_id in sorted(known - found)}
