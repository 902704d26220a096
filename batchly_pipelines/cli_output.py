"""Plain, aligned console output for the operator commands."""

from __future__ import annotations


def section(title: str, text: str) -> None:
    """Print one labelled line of a summary."""
    print(f"{title + ':':<16} {text}", flush=True)
