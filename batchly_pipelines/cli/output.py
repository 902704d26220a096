"""Plain, aligned console output for the operator commands."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm

from batchly_pipelines.services.push.organization import Progress, ProgressCallback


def section(title: str, text: str) -> None:
    """Print one labelled line of a summary."""
    print(f"{title + ':':<16} {text}", flush=True)


@contextmanager
def progress_bar(description: str, *, leave: bool = True) -> Iterator[ProgressCallback]:
    """A progress bar (records done of the total, rate) fed by a push's progress callback; shown on a terminal
    only, so piped logs stay readable."""
    with tqdm(total=0, unit="record", desc=description, dynamic_ncols=True, leave=leave, disable=None) as bar:

        def show(progress: Progress) -> None:
            bar.total = progress.total
            bar.update(progress.done - bar.n)
            bar.set_postfix_str(f"{progress.per_minute:.0f}/min")

        yield show
