"""An entity's pull and its reconciliation at once: the reconciliation follows the mirror while the pages stream in.

QuickBooks' limits set the pace of a long mirror (500 calls a minute: an import of 100,000 rows is at least ~12 s of
reading), and the reconciliation used to start only once it was done. Here a follower thread takes what each page
wrote (its ids, and the objects' synced fields while at most :data:`HOLD_PAGES` pages wait, so their JSON need
not be read back) and reconciles it in batches of 1,000, :data:`WORKERS` batches at a time over disjoint ids (each one
transaction as in :mod:`.reconcile`: while one waits for the database the other runs its Python), so by the time the
last page is stored most rows are in Batchly; after the mirror has ended (its deletions recorded, its cursor moved) a
final pass reconciles every mirror row whose version is still not reconciled — rows the batches left for it, the
deletions, anything an earlier pull or a webhook mirrored. Threads, not processes: the mirror waits on QuickBooks
and the batches on the database most of the time, which leaves the GIL free; the process's CPU (about 0.2 ms a
row, both halves) is then what bounds an import, with the database's and QuickBooks' own.

Why this is safe: reconciliation reads only committed mirror rows and records the version it read; a row the mirror
writes again after that keeps a version reconciliation did not record, so the page that wrote it hands it over
again and the final pass would meet it anyway. The batches leave for the final pass the unlinked rows a name match
could claim (``Reconciler.batch(defer_named=True)``), so the outcome is the one of a reconciliation run after the
mirror: the same Batchly rows (their ids aside: records are created in the order pages come), links, conflicts,
review flags and error list. One difference is inherent in reconciling earlier: a record QuickBooks changes while it
is imported and that was already created from its first version is merged with its second like any later pull's
edit (a field Batchly owns, an item's description, then keeps the first version's value and is pushed), where a
reconciliation after the mirror would create it from the second.

The cursor and completeness rules are the mirror's own (:func:`.organization.pull_name_list`): the cursor moves
only when the whole window was read, before the final pass starts. An error in either half fails the call with that
error: a failed batch stops the mirror at its next page (the cursor unmoved), a failed mirror stops the
reconciliation after its current batch; each batch is committed whole or not at all, and everything not yet
reconciled is found by the next reconciliation — the state is resumable either way.

Numbers: :class:`Overlapped` gives the end-to-end seconds, the mirror's seconds (start to cursor moved), the
reconciliation's tail (from the mirror's end to the last batch: what the overlap could not hide) and how many rows
were reconciled while the mirror still ran. ``ReconcileStats.duration_s`` is the reconciliation's whole span,
overlapping the mirror.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import platform
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.rules.merge import MergePolicy
from batchly_pipelines.rules.name_lists import CUSTOMERS, ITEMS, NameList
from batchly_pipelines.services.pull.mirror import Window
from batchly_pipelines.services.pull.organization import (
    PullStats,
    organization_policy,
    pull_name_list,
)
from batchly_pipelines.services.pull.owned import revert_owned_edits
from batchly_pipelines.services.pull.progress import ProgressReport
from batchly_pipelines.services.pull.reconcile import CHUNK, Reconciler, ReconcileStats
from batchly_pipelines.store.db import Engine
from batchly_pipelines.store.statistics import GrowingTables

_DONE = None  # handed to the follower once the mirror has ended
# batches reconciled at once: while one waits for the database, the other runs its Python
WORKERS = 2
# pages waiting for the reconciliation that carry their objects' synced fields (about 2 MB a page; the objects
# themselves were about 10): a reconciliation that falls further behind the mirror reads the others' JSON back
HOLD_PAGES = 10
# what the mirror hands over of one object it wrote: its id, the version written, its synced fields (or None)
_Written = tuple[str, str | None, Mapping[str, Any] | None]


@dataclass
class Overlapped:
    """What one overlapped pull and reconciliation did, and where the time went."""

    pulled: PullStats
    reconciled: ReconcileStats
    seconds: float  # end to end
    mirror_seconds: float  # from the start until the mirror's cursor moved
    tail_seconds: float  # the reconciliation after the mirror ended (its last batches and the final pass)
    reconciled_during_mirror: int  # rows reconciled while the mirror still ran
    deferred: int  # rows the batches left for the final pass (a name match could claim them)

    def numbers(self) -> dict[str, Any]:
        """The timing as plain numbers."""
        return {
            "seconds": self.seconds,
            "mirror_seconds": self.mirror_seconds,
            "tail_seconds": self.tail_seconds,
            "reconciled_during_mirror": self.reconciled_during_mirror,
            "deferred": self.deferred,
        }


class _Follower:
    """The reconciliation's thread: a batch of the ids each page wrote, then the final pass."""

    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler
        self.waiting = reconciler.meter.total or 0  # rows an earlier pull left unreconciled
        self.counted: int | None = None  # rows the window holds, once the mirror counted them
        self.fed = 0
        self.inbox: queue.SimpleQueue[list[_Written] | None] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.stop = threading.Event()  # the mirror failed: end after the current batch
        self.mirror_ended = threading.Event()
        self.during_mirror = 0
        self.deferred = 0
        self.ended_at: float | None = None
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="reconcile-follower", daemon=True)

    # called from the mirror's thread
    def feed(self, objects: Sequence[Mapping[str, Any]], versions: Mapping[str, str]) -> None:
        """Hand over what a page wrote; raises the reconciliation's error, which stops the mirror. The objects'
        synced fields (``from_qbo``, what the reconciliation would map from the mirror's JSON) travel along while at
        most :data:`HOLD_PAGES` pages wait, else only their ids: memory stays flat however far the reconciliation
        falls behind."""
        if self.error is not None:
            raise self.error
        if objects:
            self.fed += len(objects)
            mapping = self.reconciler.kind.mapping if self.inbox.qsize() < HOLD_PAGES else None
            self.inbox.put(
                [
                    (str(obj["Id"]), versions.get(obj["Id"]), mapping.from_qbo(obj) if mapping else None)
                    for obj in objects
                ]
            )
            self._estimate()

    def count(self, rows: int) -> None:
        """The mirror counted the window's rows: the reconciliation's progress expects as many."""
        self.counted = rows
        self._estimate()

    def _estimate(self) -> None:
        self.reconciler.estimate(self.waiting + max(self.counted or 0, self.fed))

    def close(self) -> None:
        """The mirror has ended (deletions recorded, cursor moved): reconcile what is left, then the final pass."""
        self.mirror_ended.set()
        self.inbox.put(_DONE)

    def abort(self) -> None:
        """The mirror failed: stop after the current batch."""
        self.stop.set()
        self.inbox.put(_DONE)

    def join(self) -> BaseException | None:
        self.thread.join()
        return self.error

    def _run(self) -> None:
        try:
            self._follow()
        except BaseException as exc:  # handed to the mirror's thread, raised there
            self.error = exc
        finally:
            self.ended_at = time.monotonic()

    def _follow(self) -> None:
        finished = False
        with ThreadPoolExecutor(WORKERS, thread_name_prefix="reconcile-batch") as pool:
            flying: dict[Future[None], set[str]] = {}  # batches under way, with their ids
            while not finished:
                pending: list[_Written] = []
                item = self.inbox.get()  # the next page's ids (or the end), and whatever else waits already
                while True:
                    if item is _DONE:
                        finished = True
                        break
                    pending.extend(item)
                    try:
                        item = self.inbox.get_nowait()
                    except queue.Empty:
                        break
                for start in range(0, len(pending), CHUNK):
                    part = pending[start : start + CHUNK]
                    ids = {qbo_id for qbo_id, _, _ in part}
                    # at most WORKERS batches at once, never two with the same record (a row mirrored twice)
                    while flying and (len(flying) >= WORKERS or any(ids & held for held in flying.values())):
                        _settle(flying)
                    if self.stop.is_set():
                        return  # the pool waits for the batches under way: each commits whole or not at all
                    known = {
                        qbo_id: (version, fields) for qbo_id, version, fields in part if version and fields
                    }
                    flying[pool.submit(self._batch, sorted(ids), known)] = ids
            while flying:
                _settle(flying)
        if not self.stop.is_set():
            self.reconciler.unreconciled()  # everything still unreconciled: left for it, deletions, earlier pulls

    def _batch(self, ids: list[str], known: Mapping[str, tuple[str, Mapping[str, Any]]]) -> None:
        left = self.reconciler.batch(ids, defer_named=True, known=known)
        with self.lock:
            self.deferred += left
            if not self.mirror_ended.is_set():
                self.during_mirror += len(ids) - left


def _settle(flying: dict[Future[None], set[str]]) -> None:
    """Wait for one of the batches under way to end; raises its error."""
    done, _ = wait(flying, return_when=FIRST_COMPLETED)
    for future in done:
        del flying[future]
        future.result()


# glibc's M_ARENA_MAX: how many malloc arenas the process's threads may spread over
_M_ARENA_MAX, ARENAS = -8, 2
_arenas_limited = False


def limit_malloc_arenas() -> None:
    """Keep glibc to :data:`ARENAS` malloc arenas from now on (once per process; nothing elsewhere). The import's
    threads — ten readers, the follower and its batches — each allocate large buffers (answers, COPY text); glibc
    gives each thread an arena of its own, which keeps tens of megabytes the process no longer uses (about 40 MB of
    a 100,000-row import's peak)."""
    global _arenas_limited
    if _arenas_limited or platform.libc_ver()[0] != "glibc":
        return
    _arenas_limited = True
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, ARENAS)


# the collector's first threshold while an import runs (Python's default: 700 allocations)
GC_THRESHOLD = 100_000
_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, int, int] = gc.get_threshold()


@contextlib.contextmanager
def collector_for_import() -> Iterator[None]:
    """Spare an import Python's full collections of the whole heap: the objects that exist when it starts (the
    process's modules, Dagster's and SQLAlchemy's structures — most of a ~130 MB baseline) are frozen out of the
    collector (``gc.freeze``) and the young generation is collected every :data:`GC_THRESHOLD` allocations instead
    of 700. Measured on a 100,000-customer import: 26 full collections took 4.4 CPU-seconds of the process's 18
    (each one walked the whole heap), the younger ones 1.1; with this, 0.35 in all. The objects an import creates
    are still collected. Restored when the last import running in the process ends (imports may run in several
    threads: Dagster's company workers)."""
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(max(_gc_saved[0], GC_THRESHOLD), *_gc_saved[1:])
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0:
                gc.set_threshold(*_gc_saved)
                gc.unfreeze()


def pull_and_reconcile(
    engine: Engine,
    client: QuickBooksClient,
    organization_id: int,
    kind: NameList,
    window: Window,
    *,
    policy: MergePolicy | None = None,
    run_id: str | None = None,
    progress: ProgressReport | None = None,
) -> Overlapped:
    """Mirror ``kind``'s records QuickBooks changed in ``window`` and reconcile them into Batchly while the pages
    arrive, then reconcile what is left (see module doc); raises the first error of either half."""
    with collector_for_import():
        return _pull_and_reconcile(
            engine, client, organization_id, kind, window, policy=policy, run_id=run_id, progress=progress
        )


def _pull_and_reconcile(
    engine: Engine,
    client: QuickBooksClient,
    organization_id: int,
    kind: NameList,
    window: Window,
    *,
    policy: MergePolicy | None,
    run_id: str | None,
    progress: ProgressReport | None,
) -> Overlapped:
    started = time.monotonic()
    limit_malloc_arenas()
    # the mirror refreshes its own table's statistics: the reconciliation those of the tables it fills
    growing = GrowingTables.of_reconcile(engine, kind.entity_type, mirror=False)
    reconciler = Reconciler(
        engine, kind, organization_id, policy=policy, run_id=run_id, progress=progress, growing=growing
    )
    follower = _Follower(reconciler)
    follower.thread.start()
    try:
        pulled = pull_name_list(
            engine,
            client,
            organization_id,
            kind.qbo_entity,
            window,
            progress=progress,
            on_stored=follower.feed,
            on_estimate=follower.count,
        )
    except BaseException as exc:
        follower.abort()
        other = follower.join()
        if other is not None and other is not exc:
            exc.add_note(f"the reconciliation following the mirror failed too: {other!r}")
        raise
    mirror_ended = time.monotonic()
    follower.close()
    error = follower.join()
    if error is not None:
        raise error
    reconciled = reconciler.finish()
    ended = follower.ended_at or time.monotonic()
    return Overlapped(
        pulled,
        reconciled,
        seconds=round(ended - started, 3),
        mirror_seconds=round(mirror_ended - started, 3),
        tail_seconds=round(max(0.0, ended - mirror_ended), 3),
        reconciled_during_mirror=follower.during_mirror,
        deferred=follower.deferred,
    )


def pull_and_reconcile_customers(
    engine: Engine,
    client: QuickBooksClient,
    organization_id: int,
    window: Window,
    *,
    review_fields: Iterable[str] = (),
    run_id: str | None = None,
    progress: ProgressReport | None = None,
) -> Overlapped:
    """``pull_customers`` and ``reconcile_customers`` at once (see module doc)."""
    policy = organization_policy(engine, CUSTOMERS, organization_id, review_fields)
    return pull_and_reconcile(
        engine, client, organization_id, CUSTOMERS, window, policy=policy, run_id=run_id, progress=progress
    )


def pull_and_reconcile_items(
    engine: Engine,
    client: QuickBooksClient,
    organization_id: int,
    window: Window,
    *,
    run_id: str | None = None,
    progress: ProgressReport | None = None,
) -> Overlapped:
    """``pull_items`` and ``reconcile_items`` at once (see module doc); Batchly's edits of the fields QuickBooks owns
    are put back after the final pass, as ``reconcile_items`` does."""
    policy = organization_policy(engine, ITEMS, organization_id)
    done = pull_and_reconcile(
        engine, client, organization_id, ITEMS, window, policy=policy, run_id=run_id, progress=progress
    )
    started = time.monotonic()
    reverted, fields = revert_owned_edits(engine, ITEMS, organization_id, run_id=run_id)
    done.reconciled.updated += reverted
    done.reconciled.conflicts += fields
    spent = round(time.monotonic() - started, 3)
    done.seconds += spent
    done.tail_seconds += spent
    done.reconciled.duration_s += spent
    return done
