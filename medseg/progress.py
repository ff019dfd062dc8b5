"""The one progress helper: a rich progress bar on a terminal, silent when output is not a terminal (CI, pipes)."""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def track(items: Iterable[T], description: str, *, total: int | None = None, enabled: bool | None = None) -> Iterator[T]:
    """Yield ``items`` while showing a progress bar with count, rate and ETA on stderr.

    ``enabled=None`` shows the bar only when stderr is a terminal, so logs and CI stay clean.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)


class FractionBar:
    """A bar over a fraction in [0, 1] (e.g. of a time budget) with a status text and an ETA; silent off a tty."""

    def __init__(self, description: str, *, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.description = description
        self._progress = None
        self._task = None

    def __enter__(self) -> "FractionBar":
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                      TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), TextColumn("eta"),
                                      TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=1000, status="")
        return self

    def update(self, fraction: float, status: str = "") -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=int(1000 * min(max(fraction, 0.0), 1.0)), status=status)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
