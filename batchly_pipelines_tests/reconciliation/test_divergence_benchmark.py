"""The divergence benchmark runs end to end (a few rounds, SQLite) and reports what its referee found."""

from __future__ import annotations

import argparse

from benchmarks.scenarios import divergence


def test_a_short_hunt_reports_records_differences_and_what_explains_them() -> None:
    parser = argparse.ArgumentParser()
    divergence.add_arguments(parser)
    args = parser.parse_args(
        ["--rounds", "3", "--seed", "5", "--customers", "6", "--items", "2", "--database-url", "sqlite"]
    )
    result = divergence.run(args)
    assert result["records"] >= 8 and result["pushes"] == result["pulls"] == 3
    assert result["silent_divergences"] == result["differences"] - result["explained"]
    assert len(result["examples"]["silent"]) == min(result["silent_divergences"], divergence.EXAMPLES)
    assert sum(result["operations"].values()) > 0 and result["run_failures"] == []
