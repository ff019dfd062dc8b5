"""Training batches for timing a planned step as a run takes it: the real ``PatchLoader``, its workers and the
default augmentation of the patch, reading one random case from a temporary cache.

A plan's step-time estimate that times the network on a fixed tensor leaves out what a run's loader costs: on a
2-core machine the loader worker's augmentation takes a core while the step runs, so the thread count that is
fastest alone (two) is not the one a run keeps (one), and the step waits for its batch when augmentation is the
slower of the two. Timing the step beside the real loader measures both.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

TIMING_CASE = "timing_case"


def write_timing_case(folder: Path, patch_size: Sequence[int], in_channels: int, num_classes: int,
                      seed: int = 0) -> None:
    """One cached case ``(in_channels, *1.5 x patch)`` of standard-normal float32 voxels, its label a random
    assignment of ``num_classes`` values (every class present, so foreground-centred patches are drawn)."""
    from medseg.data.cache import write_case

    rng = np.random.default_rng(seed)
    shape = tuple(int(np.ceil(1.5 * int(p))) for p in patch_size)
    data = rng.standard_normal((int(in_channels), *shape), dtype=np.float32)
    seg = rng.integers(0, max(2, int(num_classes)), size=(1, *shape), dtype=np.int8)
    drawn = rng.integers(0, seg[0].size, 4000)  # voxels to centre foreground patches on (no whole-case argwhere)
    coordinates = np.stack(np.unravel_index(drawn, shape), 1).astype(np.int32)
    values = seg[0].ravel()[drawn]
    locations = {value: coordinates[values == value] for value in range(1, max(2, int(num_classes)))}
    write_case(folder, TIMING_CASE, data, seg, locations, {"spacing": [1.0] * len(shape), "shape": list(shape)})


@contextlib.contextmanager
def timing_case(patch_size: Sequence[int], in_channels: int, num_classes: int, seed: int = 0) -> Iterator[Path]:
    """A temporary cache folder holding the one timing case (``write_timing_case``), removed on exit."""
    with tempfile.TemporaryDirectory(prefix="medseg_timing_") as folder:
        write_timing_case(Path(folder), patch_size, in_channels, num_classes, seed)
        yield Path(folder)


def timing_batches(folder: Path, patch_size: Sequence[int], batch_size: int, *, num_workers: int,
                   num_batches: int, seed: int = 0) -> Iterator[dict]:
    """``num_batches`` augmented batches ``{"image": (B, C, *P) float32, "label": (B, 1, *P) int8}`` of the timing
    case in ``folder`` from ``num_workers`` loader workers (0: made in this process), as
    ``medseg.data.loader.PatchLoader`` gives a run (a generator: closing it ends the workers)."""
    from medseg.data.loader import PatchLoader
    from medseg.transforms.config import AugmentationConfig

    return iter(PatchLoader(folder, patch_size, batch_size, augmentation=AugmentationConfig.for_patch(patch_size),
                            num_workers=num_workers, seed=seed, num_batches=num_batches, progress=False))
