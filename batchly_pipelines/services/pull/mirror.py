"""Reading what QuickBooks changed in a window into ``qbo_mirror``, page by page, with CDC for deletions.

Windows are read with keyset paging on ``(MetaData.LastUpdatedTime, Id)``: each page starts at the newest second of
the previous one (``>=``) and skips the versions — ``(Id, SyncToken)`` — already seen in that second. A row that
changes while the window is read moves to a later second with a new SyncToken and is met again, never skipped (an
edited row is not dropped for having been seen at its old time); only the versions of one second are held in memory.

More than a page of rows in one second is read by position inside that second (ordered by Id). A row edited during
that read leaves the second and shifts the rows after it down a position, so one pass alone can miss an untouched
row: the second is re-read until a whole pass ran while its ``COUNT(*)`` did not move and the pass met exactly that
many distinct rows (at most ``SECOND_PASSES`` passes; past that the pull fails before its cursor moves).

A window is read by several readers at once, up to the client's in-flight limit (the client's limiter keeps the
realm's per-second and per-minute budgets): it starts as one range, and while a reader is idle, a range whose page
came back full hands the upper half of what is left of it to that reader, so a long history spreads over the
readers after a few pages and a small window costs one call as before. Pages reach the caller as they come (not in
time order); at most :data:`PAGES_WAITING` pages wait for the caller besides the one each reader holds.

A mirror row is written only when QuickBooks has a newer version of it than the mirror holds (a higher SyncToken, or
a deletion), decided in the write itself, so pulling the same window twice writes nothing and a slower read landing
last never puts an older version back (:mod:`batchly_pipelines.store.mirror` versions the rows).

How far a window was read is QuickBooks' own clock, never ours: every answer's ``time`` is noted on a
:class:`ServerClock`, and a row changed before a range's last page was asked for is met by that range's paging (a
row edited while the window is read moves to QuickBooks' now, at or after where the paging of the range holding now
stands). A range whose last answer came after its end holds nothing newer; the cursor moves to the earliest last
answer of a range that did not (:meth:`ServerClock.complete_until`).

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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
# pages read and waiting for the caller to store them (each reader holds one more while it waits)
PAGES_WAITING = 2
# reads by position of one crowded second before giving up (the pull then fails, its cursor unmoved)
SECOND_PASSES = 5

Version = tuple[str, str]  # (Id, SyncToken): one version of one QuickBooks object


class ServerClock:
    """QuickBooks' ``time`` of the answers of one read (thread-safe: pages are read concurrently): the latest, and
    for each range of the window read to its end, the time of its last answer."""

    def __init__(self) -> None:
        self.latest: datetime | None = None
        self._finished: list[tuple[datetime, datetime]] = []  # (range end, time of the range's last answer)
        self._lock = threading.Lock()

    def saw(self, moment: datetime | None) -> None:
        """Note the ``time`` of one answer (None: the answer carried none)."""
        if moment is None:
            return
        with self._lock:
            if self.latest is None or moment > self.latest:
                self.latest = moment

    def finished(self, range_end: datetime, last_answer: datetime | None) -> None:
        """A range of the window ending at ``range_end`` was read through; ``last_answer`` is the time of its
        last answer."""
        if last_answer is None:
            return
        self.saw(last_answer)
        with self._lock:
            self._finished.append((range_end, last_answer))

    def complete_until(self, end: datetime, lag: timedelta) -> datetime | None:
        """Up to when, on QuickBooks' clock, every row stamped before it has been read (``end`` at most): an edit
        made while a range was read lands at QuickBooks' now and is met by that range's paging if it was visible
        to the range's last answer — stamped at least ``lag`` before it; a range whose last answer came ``lag``
        past its end holds nothing newer. So: the earliest last answer less ``lag`` of a range that ends after
        it, or ``end``. None when no range carried a time."""
        with self._lock:
            if not self._finished:
                return None
            still_open = [answer - lag for range_end, answer in self._finished if answer - lag < range_end]
        return min([end, *still_open])


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
    """Every object of ``entity`` updated in ``window``, one page at a time (not in time order), each version
    (Id, SyncToken) once per range it is met in; ``clock`` notes QuickBooks' time of every answer and how far each
    range was read. Pages are read concurrently, up to the client's in-flight limit (its limiter keeps the realm's
    per-second and per-minute budgets): while a reader is idle, a range whose page came back full hands the upper
    half of what is left of it to that reader. Besides the page each reader holds, at most :data:`PAGES_WAITING`
    wait for the caller (who stores them: the slower side, so more would only cost memory); a caller that
    stops early stops the readers."""
    reader = _SplitReader(client, entity, clock or ServerClock(), max(1, client.config.in_flight))
    return reader.pages(window)


@dataclass
class _Range:
    """What is left to read of one range of a window: ``[start, end)``, less the versions already met at
    ``start``."""

    start: datetime
    end: datetime
    seen: set[Version]


_Handed = tuple[list[dict[str, Any]] | None, BaseException | None]


class _SplitReader:
    """Reads a window's ranges in threads, splitting them while readers are idle (see :func:`changed_pages`)."""

    def __init__(self, client: QuickBooksClient, entity: str, clock: ServerClock, workers: int) -> None:
        self.client, self.entity, self.clock, self.workers = client, entity, clock, workers
        self.todo: list[_Range] = []
        self.busy = 0
        self.exited = 0
        self.cond = threading.Condition()
        self.stop = threading.Event()
        self.out: queue.Queue[_Handed] = queue.Queue(PAGES_WAITING)

    def pages(self, window: Window) -> Iterator[list[dict[str, Any]]]:
        self.todo.append(_Range(window.start, window.end, set()))
        threads = [
            threading.Thread(target=self._work, name=f"qbo-read-{n}", daemon=True)
            for n in range(self.workers)
        ]
        for thread in threads:
            thread.start()
        try:
            while True:
                page, error = self.out.get()
                if error is not None:
                    raise error
                if page is None:
                    return
                yield page
        finally:
            self.stop.set()
            with self.cond:
                self.cond.notify_all()
            for thread in threads:
                thread.join()

    def _hand_over(self, item: _Handed) -> None:
        while not self.stop.is_set() or item[0] is None:
            try:
                self.out.put(item, timeout=0.1)
                return
            except queue.Full:
                if self.stop.is_set():
                    return
                continue

    def _work(self) -> None:
        try:
            while (part := self._next()) is not None:
                try:
                    self._read(part)
                finally:
                    with self.cond:
                        self.busy -= 1
                        self.cond.notify_all()
        except BaseException as exc:  # handed to the consumer, raised there
            self._hand_over((None, exc))
            self.stop.set()
        finally:
            with self.cond:
                self.exited += 1
                last = self.exited == self.workers
            if last:
                self._hand_over((None, None))

    def _next(self) -> _Range | None:
        """The next range to read; None when everything is read (or the read stopped)."""
        with self.cond:
            while not self.stop.is_set():
                if self.todo:
                    self.busy += 1
                    return self.todo.pop()
                if self.busy == 0:
                    self.cond.notify_all()
                    return None
                self.cond.wait(0.5)
            return None

    def _split(self, part: _Range) -> _Range:
        """Hand the upper half of what is left of ``part`` to an idle reader; returns what this reader keeps."""
        with self.cond:
            if self.todo or self.busy >= self.workers:
                return part
            middle = (part.start + (part.end - part.start) / 2).replace(microsecond=0)
            if not part.start < middle < part.end:
                return part
            self.todo.append(_Range(middle, part.end, set()))
            self.cond.notify()
        return _Range(part.start, middle, part.seen)

    def _read(self, part: _Range) -> None:
        """Read one range through (keyset paging, see the module doc), splitting what is left of it while a reader
        is idle; the range's own clock tells :meth:`ServerClock.complete_until` when its last answer came."""
        own = ServerClock()
        while not self.stop.is_set():
            where = Window(part.start, part.end).conditions(self.entity)
            answer = self.client.query(q.select(self.entity, where, ORDER, 1, q.MAX_RESULTS))
            own.saw(answer.server_time)
            page = answer.rows
            fresh = [obj for obj in page if version_of(obj) not in part.seen]
            if fresh:
                self._hand_over((fresh, None))
            if len(page) < q.MAX_RESULTS:
                break
            newest = qbo_last_updated(page[-1])
            if newest == part.start:  # a whole page inside one second: read that second by position
                for crowded in _one_second(self.client, self.entity, part.start, part.seen, own):
                    self._hand_over((crowded, None))
                part = _Range(part.start + timedelta(seconds=1), part.end, set())
                if part.start >= part.end:  # that second was the range's last
                    break
                continue
            seen = {version_of(obj) for obj in page if qbo_last_updated(obj) == newest}
            part = self._split(_Range(newest, part.end, seen))
        else:
            return  # stopped: this range is not read through
        self.clock.finished(part.end, own.latest)


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
    written = store_versions(conn, organization_id, entity, objects, force=force)
    return [obj for obj in objects if obj["Id"] in written]


def store_versions(
    conn: Connection,
    organization_id: int,
    entity: str,
    objects: Sequence[Mapping[str, Any]],
    *,
    force: bool = False,
) -> dict[str, str]:
    """:func:`store_objects`, returning the id of each object written with the mirror version it was written at."""
    if not objects:
        return {}
    return write_versions(
        conn, organization_id, entity, ((obj, qbo_last_updated(obj)) for obj in objects), force=force
    )


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
    engine: Engine,
    client: QuickBooksClient,
    organization_id: int,
    entities: Sequence[str],
    window: Window,
    quickbooks_now: datetime | None = None,
    *,
    also: Callable[[Connection, str, list[dict[str, Any]]], None] | None = None,
) -> Deletions:
    """Record what QuickBooks deleted since the window's start (when within CDC's 30 days), mirrored or not; an
    entity whose changes crowd one second past a CDC answer is checked by absence instead (see module doc).
    ``quickbooks_now`` is QuickBooks' clock (the ``time`` of this pull's latest answer): CDC's 30 days are
    counted on it, so a QuickBooks clock ahead of ours is not refused as "older than 30 days". ``also`` is
    called with each entity's newly recorded deletions in the transaction recording them."""
    since = cdc_since(window, quickbooks_now)
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
        for entity, deleted in objects.items():
            if also is not None:
                also(conn, entity, deleted)
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
