"""The chaos benchmark's own arithmetic: its seeded plan and its throughput figure (the run itself needs Dagster and
minutes; ``push/test_push_audit.py`` covers its referee)."""

from __future__ import annotations

import argparse
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from benchmarks.scenarios import chaos

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _args(**overrides: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    chaos.add_arguments(parser)
    args = parser.parse_args([])
    for name, value in overrides.items():
        setattr(args, name, value)
    return args


def test_the_plan_is_seeded_and_holds_every_injection_asked_for() -> None:
    args = _args(invoices=1000, kills=3, pauses=2, db_drops=4, racers=1, reconnects=1, edits=0.01)

    plan = chaos.schedule(args, random.Random(7))

    assert plan == chaos.schedule(args, random.Random(7))
    assert plan != chaos.schedule(args, random.Random(8))
    kinds = Counter(p.kind for p in plan)
    assert {k: kinds[k] for k in ("kill", "pause", "db_drop", "racer", "reconnect")} == {
        "kill": 3, "pause": 2, "db_drop": 4, "racer": 1, "reconnect": 1
    }  # fmt: skip
    assert kinds["void"] + kinds["correct"] == 10
    assert plan == sorted(plan) and all(0 < p.at < 0.9 for p in plan)


def test_a_sliding_window_allows_a_burst_per_window_and_again_after_a_pause() -> None:
    assert chaos.allowed_calls([(0, 30)], window=10, budget=5) == 20  # at 0, 10, 20 and 30
    assert chaos.allowed_calls([(0, 5), (7, 12)], window=10, budget=5) == 10  # the second burst waits for 10
    assert chaos.allowed_calls([(0, 5), (40, 45)], window=10, budget=5) == 10  # recharged during the pause
    assert chaos.allowed_calls([], window=10, budget=5) == 0


def test_throughput_counts_only_time_with_work_due_and_no_outage_the_benchmark_caused() -> None:
    # 600 writes over 100 s; work was due all along except 20 s of backoff; a kill at 40 s, and the next write by
    # anyone else at 50 s (the killed run's own write-back at 41 s does not end the outage)
    writes = [(_at(n / 6), "run-a" if n <= 246 else "run-b") for n in range(601)]
    writes = [w for w in writes if not (41.1 < w[0].timestamp() - T0.timestamp() < 50)]
    busy = [(_at(t), 0 if 70 <= t < 90 else 5000) for t in range(0, 101)]

    figures = chaos.throughput(writes, busy, [chaos.Outage(_at(40), "run-a", 60)], time_scale=10.0, budget=20)

    assert figures["pushing_seconds"] == 100.0
    assert figures["idle_seconds"] == 20.0
    assert figures["outage_seconds"] == 10.0
    assert figures["counted_seconds"] == 70.0
    # windows of 6 s, 20 calls each: 7 bursts in [0, 40], 4 in [50, 70] (the first at 50), 2 in [90, 100]
    assert figures["budget_calls"] == 20 * (7 + 4 + 2)
    assert figures["budget_writes"] == 260 * 30  # plenty due: every allowed call carries 30
    assert figures["throughput_ratio"] == figures["throughput_ratio_full_calls"]
    assert figures["throughput_ratio"] == pytest.approx(len(writes) / (260 * 30), abs=0.001)
    # with the outage: [0, 70] holds 12 bursts, [90, 100] 2
    assert figures["throughput_ratio_with_outages"] == pytest.approx(len(writes) / (280 * 30), abs=0.001)


def test_an_outage_counts_at_most_the_recovery_the_design_allows() -> None:
    writes = [(_at(t), "run-a") for t in range(0, 61)]  # nobody else ever wrote after the kill at 30 s
    busy = [(_at(t), 100) for t in range(0, 61)]

    assert (
        chaos.throughput(writes, busy, [chaos.Outage(_at(30), "run-a", 60)], 1.0, 1)["outage_seconds"] == 30.0
    )
    assert (
        chaos.throughput(writes, busy, [chaos.Outage(_at(30), "run-a", 12)], 1.0, 1)["outage_seconds"] == 12.0
    )


def test_no_window_is_credited_more_writes_than_rows_were_due() -> None:
    window, budget = 10.0, 5  # five calls of 30 a window: 150 writes
    plenty = [(0.0, 5000)]
    assert chaos.allowed_writes([(0, 30)], window, budget, plenty) == 20 * 30
    # 40 rows due: a window is credited 40 writes (a call of 30 and one of 10), not five calls of 30
    assert chaos.allowed_writes([(0, 5)], window, budget, [(0.0, 40)]) == 40
    # the tail of a push: 25 rows left for 3 s after a burst of work, then none
    tail = [(0.0, 5000), (12.0, 25), (15.0, 0)]
    assert chaos.allowed_writes([(0, 15)], window, budget, tail) == 5 * 30 + 5 * 30 + 0
    assert chaos.allowed_writes([(12, 15)], window, budget, tail) == 25
    # more comes due within the window: credited as it comes (10 at once, 90 more at 2 s in three calls)
    rising = [(0.0, 10), (2.0, 100)]
    assert chaos.allowed_writes([(0, 5)], window, budget, rising) == 100
    assert chaos.allowed_writes([], window, budget, plenty) == 0


def test_the_tail_of_a_push_is_not_credited_as_full_calls() -> None:
    # 300 writes over 30 s, with plenty due for 20 s, then only 20 rows for the last 10 s
    writes = [(_at(n / 10), "run-a") for n in range(301)]
    busy = [(_at(t), 5000 if t < 20 else 20) for t in range(0, 31)]

    figures = chaos.throughput(writes, busy, [], time_scale=10.0, budget=20)

    assert figures["budget_calls"] == 20 * 6  # bursts at 0, 6, 12, 18, 24 and 30
    assert figures["budget_writes"] == 20 * 4 * 30 + 20 + 20  # the two bursts of the tail: 20 rows each
    assert figures["throughput_ratio"] > figures["throughput_ratio_full_calls"]


def test_a_paused_run_that_writes_again_after_its_resume_ends_its_outage() -> None:
    """Paused at 30 s and resumed at 40 s, the run takes the company again at once and writes from 41 s: the outage
    is 11 s, not the 60 s allowed — before, only someone else's write ended it, so the hit run's own writes fell in
    uncounted time and the ratio rose above 1 (chaos seeds 2 and 3, 1.198 and 1.345)."""
    writes = [(_at(t), "run-a") for t in [*range(0, 30), *range(41, 101)]]
    busy = [(_at(t), 100) for t in range(0, 101)]
    paused = chaos.Outage(_at(30), "run-a", 60, resumed=_at(40))

    assert chaos.throughput(writes, busy, [paused], 1.0, 1)["outage_seconds"] == 11.0
    killed = chaos.Outage(_at(30), "run-a", 60)  # never resumed: its own write-backs do not end it
    assert chaos.throughput(writes, busy, [killed], 1.0, 1)["outage_seconds"] == 60.0
