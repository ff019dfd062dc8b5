"""Map a function over cases in worker processes, with a progress bar and results in input order."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Sequence, TypeVar

from medseg.progress import track
from medseg.workers import die_with_parent

T = TypeVar("T")
R = TypeVar("R")


def default_workers(num_items: int) -> int:
    """One worker per core, never more than there are items (at least 1)."""
    return max(1, min(os.cpu_count() or 1, num_items))


def map_cases(function: Callable[[T], R], items: Sequence[T], *, workers: int | None = None,
              description: str = "cases", progress: bool | None = None) -> list[R]:
    """``[function(item) for item in items]``, in ``workers`` processes (1 = in this process).

    Each item is handled by one worker at a time, so memory stays bounded by ``workers`` cases. The workers die
    with this process, even when it is killed with SIGKILL.
    """
    workers = default_workers(len(items)) if workers is None else max(1, workers)
    if workers == 1 or len(items) <= 1:
        return [function(item) for item in track(items, description, enabled=progress)]
    results: list = [None] * len(items)
    with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(function, item): index for index, item in enumerate(items)}
        for future in track(as_completed(futures), description, total=len(items), enabled=progress):
            results[futures[future]] = future.result()
    return results

