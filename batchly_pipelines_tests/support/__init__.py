"""Importable test helpers shared by the tests and the benchmarks (conftests only declare fixtures)."""
