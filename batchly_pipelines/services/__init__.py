"""Orchestration without Dagster (pull, push, reconciliation, conflict review), shared by the Dagster definitions,
the CLI and the benchmarks."""
