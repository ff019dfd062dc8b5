"""The trainer's thread count: chosen by timing steps at each candidate, re-chosen when the machine's load changes."""

from __future__ import annotations

import pytest

from medseg.compute import ThreadChooser, thread_candidates


def _run(chooser: ThreadChooser, seconds_at: dict[int, float], steps: int) -> list[int]:
    """Steps whose time depends on the thread count only; the counts used."""
    used = []
    for _ in range(steps):
        threads = chooser.threads()
        used.append(threads)
        chooser.record(threads, seconds_at[threads])
    return used


def test_candidates_cover_one_thread_the_free_cores_and_all_cores() -> None:
    assert thread_candidates(1, cores=2) == [1, 2]
    assert thread_candidates(1, cores=16) == [1, 15, 16]
    assert thread_candidates(0, cores=8, processes=2) == [1, 4]
    assert thread_candidates(4, cores=2) == [1, 2]  # busy workers: still one thread at least
    assert thread_candidates(1, cores=1) == [1]


@pytest.mark.parametrize(("seconds_at", "best"), [({1: 0.6, 2: 0.4}, 2), ({1: 0.6, 2: 5.0}, 1)])
def test_the_faster_count_is_kept_after_the_probe(seconds_at: dict[int, float], best: int) -> None:
    chooser = ThreadChooser([1, 2], probe_steps=3, reprobe_every=1000)
    used = _run(chooser, seconds_at, 40)
    assert used[-20:] == [best] * 20
    assert chooser.history[0]["threads"] == best
    if best == 1:  # a candidate 1.5x slower than the best so far is dropped after one step
        assert used.count(2) == 1


def test_a_change_of_load_is_followed() -> None:
    chooser = ThreadChooser([1, 2], probe_steps=3, reprobe_every=500)
    quiet, loaded = {1: 0.6, 2: 0.4}, {1: 0.65, 2: 4.0}  # a core taken by other work: two threads stall
    assert _run(chooser, quiet, 20)[-1] == 2
    used = _run(chooser, loaded, 20)
    assert used[-10:] == [1] * 10  # slowed 1.5x -> probed again -> one thread
    assert used[:20].count(2) <= 4  # the stall lasted a few steps, not the run
    assert _run(chooser, quiet, 600)[-1] == 2  # the periodic probe finds the quiet machine again


def test_a_single_candidate_is_never_probed() -> None:
    chooser = ThreadChooser([3])
    assert set(_run(chooser, {3: 1.0}, 10)) == {3} and chooser.history == []
