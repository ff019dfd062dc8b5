"""The torch thread count of a CPU training process, chosen by timing its own steps at each candidate count.

No fixed rule fits: on a quiet 2-core machine two threads made a 2D U-Net's bfloat16 step 1.7x faster than one,
while with one core busy elsewhere (another job, or a loader worker that needs its core) two threads made the same
step 3-10x slower than one (the threads wait on each other). So the trainer probes: it times a few steps at each
candidate, keeps the fastest, and probes again every ``reprobe_every`` steps, or as soon as the kept count's steps
run 1.5x slower than when it was chosen (the machine's load changed).
"""

from __future__ import annotations

import os
import statistics
from typing import Sequence


def thread_candidates(num_workers: int, processes: int = 1, cores: int | None = None) -> list[int]:
    """Thread counts worth probing for one of ``processes`` training processes on a machine of ``cores`` cores
    whose ``num_workers`` loader workers (per process) share them: 1, the cores the workers leave free, and all
    cores, each divided among the processes."""
    cores = cores or os.cpu_count() or 1
    share = max(1, cores // max(1, processes))
    free = max(1, (cores - num_workers * processes) // max(1, processes))
    return sorted({1, min(free, share), share})


class ThreadChooser:
    """Picks the thread count of each step (``threads()``) from the measured seconds of earlier steps
    (``record(threads, seconds)``): a probe of ``probe_steps`` steps per candidate (a candidate whose first step
    is 1.5x slower than the best so far is dropped after it), then the fastest median until the next probe.

    ``candidates`` of one element: that count always, no probing. The first ``warmup_steps`` steps (one-off
    allocations, caches) are not counted."""

    def __init__(self, candidates: Sequence[int], *, probe_steps: int = 3, reprobe_every: int = 500,
                 warmup_steps: int = 1):
        if not candidates:
            raise ValueError("no thread candidates")
        self.candidates = sorted(set(int(c) for c in candidates))
        self.probe_steps, self.reprobe_every, self.warmup_steps = probe_steps, reprobe_every, warmup_steps
        self.chosen = self.candidates[0]
        self.history: list[dict] = []  # one entry per finished probe: {"step", "seconds": {threads: median}}
        self._step = 0
        self._queue: list[int] = []
        self._samples: dict[int, list[float]] = {}
        self._since_choice: list[float] = []
        self._chosen_seconds = float("inf")
        if len(self.candidates) > 1:
            self._start_probe()

    def threads(self) -> int:
        """The thread count for the next step."""
        if self._step < self.warmup_steps:
            return self.chosen
        return self._queue[0] if self._queue else self.chosen

    def record(self, threads: int, seconds: float) -> None:
        """The step run at ``threads`` threads took ``seconds`` (its wall time, the wait for its batch included)."""
        self._step += 1
        if self._step <= self.warmup_steps or len(self.candidates) == 1:
            return
        if self._queue and threads == self._queue[0]:
            samples = self._samples.setdefault(threads, [])
            samples.append(seconds)
            best = min((statistics.median(s) for t, s in self._samples.items() if t != threads and s),
                       default=float("inf"))
            if len(samples) >= self.probe_steps or seconds > 1.5 * best:
                self._queue.pop(0)
            if not self._queue:
                self._choose()
            return
        self._since_choice.append(seconds)
        recent = self._since_choice[-self.probe_steps:]
        drifted = len(recent) == self.probe_steps and statistics.median(recent) > 1.5 * self._chosen_seconds
        if drifted:  # its recent steps are its new measurement: probe the others against them
            self._start_probe(recent)
        elif len(self._since_choice) >= self.reprobe_every:
            self._start_probe()

    def _start_probe(self, current_samples: list[float] | None = None) -> None:
        current = self.chosen  # the kept count first: the others are compared against it
        others = [c for c in self.candidates if c != current]
        self._queue = others if current_samples else [current] + others
        self._samples = {current: list(current_samples)} if current_samples else {}

    def _choose(self) -> None:
        medians = {t: statistics.median(s) for t, s in self._samples.items() if s}
        self.chosen = min(medians, key=medians.get)
        self._chosen_seconds = medians[self.chosen]
        self._since_choice = []
        self.history.append({"step": self._step, "seconds": {str(t): round(m, 4) for t, m in medians.items()},
                             "threads": self.chosen})
