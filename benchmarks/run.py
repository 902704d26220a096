"""Benchmark entry point: ``python benchmarks/run.py SCENARIO [options]``.

Each scenario lives in ``benchmarks/scenarios/<name>.py`` and exposes ``add_arguments(parser)`` and
``run(args) -> dict``. The scenario's figures are printed as one JSON object on the last line of output.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import scenarios


def available() -> list[str]:
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(scenarios.__path__))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="scenario", required=True)
    modules = {}
    for name in available():
        module = importlib.import_module(f"benchmarks.scenarios.{name.replace('-', '_')}")
        modules[name] = module
        module.add_arguments(sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0]))
    parser.add_argument("--all", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    result = modules[args.scenario].run(args)
    print(json.dumps({"scenario": args.scenario, **result}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
