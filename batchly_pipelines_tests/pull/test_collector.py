"""An import spares Python's collector the heap that existed before it, and gives the process back its settings."""

from __future__ import annotations

import gc
import threading

from batchly_pipelines.services.pull.overlap import GC_THRESHOLD, collector_for_import


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_the_heap_is_frozen_while_imports_run_and_restored_after_the_last_one() -> None:
    before = gc.get_threshold()
    entered, leave = threading.Event(), threading.Event()

    def other_import() -> None:
        with collector_for_import():
            entered.set()
            leave.wait(10)

    with collector_for_import():
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == max(before[0], GC_THRESHOLD)
        worker = threading.Thread(target=other_import)
        worker.start()
        assert entered.wait(10)
    # one import still runs: still frozen
    assert gc.get_freeze_count() > 0 and gc.get_threshold()[0] == max(before[0], GC_THRESHOLD)
    leave.set()
    worker.join()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


def test_garbage_made_during_an_import_is_still_collected() -> None:
    with collector_for_import():
        _Cycle()
        assert gc.collect() >= 1
