"""Tiles of the plane for streamed prediction: when even a patch-deep band of the whole plane, every output
channel of it, would pass the memory limit, the plane (the axes after the first) is cut into tiles, each streamed
along the first axis on its own (``sliding_window_slabs(tile=...)``) and restored to its part of the output.

A tile runs every window that reaches a source row its part of the output reads, so the windows along tile borders
run once per tile they reach (the cost), and every output voxel is still the average of exactly the windows that
cover it, added in the same order as without tiles. Of the ways to cut each axis into equal parts of the output,
the one with the fewest window runs whose band fits the limit is taken; where none fits, the one with the smallest
band (one or two windows across per axis).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

from medseg.inference.restore import source_rows
from medseg.inference.sliding_window import padded_starts, tile_rows


@dataclass(frozen=True)
class Tile:
    """One tile: per in-plane axis, the window starts ``[i0, i1)`` it runs (indices into ``padded_starts``), the
    output rows ``[a, b)`` (cropped input grid) it gives, and the first network-grid row of the slabs it gets."""

    windows: tuple[tuple[int, int], ...]
    output: tuple[tuple[int, int], ...]
    source_start: tuple[int, ...]


@dataclass(frozen=True)
class _AxisPart:
    windows: tuple[int, int]
    output: tuple[int, int]
    source_start: int
    extent: int  # rows of the band on this axis (padded network grid)


def whole_plane(shape_in: Sequence[int], shape_out: Sequence[int], patch_size: Sequence[int], step: float) -> Tile:
    """The one tile of an uncut plane: every window, all of the output's plane (shapes as for ``plane_tiles``)."""
    return Tile(tuple((0, len(padded_starts(int(n), int(p), step)[0])) for n, p in zip(shape_in[1:], patch_size[1:])),
                tuple((0, int(n)) for n in shape_out[1:]), (0,) * (len(shape_out) - 1))


def _axis_parts(size_in: int, size_out: int, patch: int, step: float, count: int) -> list[_AxisPart]:
    """An axis of ``size_in`` network-grid rows (``size_out`` output rows) cut into ``count`` equal parts of the
    output (fewer where the output is shorter), each with the windows that reach the source rows it reads."""
    starts, before = padded_starts(size_in, patch, step)
    if size_in == size_out:
        lower = upper = list(range(size_out))
    else:
        lower, upper, _ = source_rows(size_in, size_out)
    bounds = sorted({round(j * size_out / count) for j in range(count + 1)})
    parts = []
    for a, b in zip(bounds, bounds[1:]):
        low, high = int(lower[a]) + before, int(upper[b - 1]) + before  # padded rows the outputs read
        first = next(i for i, s in enumerate(starts) if s + patch > low)
        last = max(i for i, s in enumerate(starts) if s <= high) + 1
        windows = (first, last)
        parts.append(_AxisPart(windows, (a, b), tile_rows(size_in, patch, step, windows)[0],
                               starts[last - 1] + patch - starts[first]))
    return parts


def plane_tiles(shape_in: Sequence[int], shape_out: Sequence[int], patch_size: Sequence[int], step: float, *,
                voxel_bytes: int, limit: int, fixed_bytes: int = 0) -> list[Tile]:
    """Tiles of the plane of a volume of spatial ``shape_in`` on the network grid (``shape_out`` on the output
    grid), windows ``patch_size`` at ``step``: the cut with the fewest window runs whose working set,
    ``voxel_bytes`` per in-plane voxel of its band plus ``fixed_bytes``, fits ``limit`` bytes; else the cut with
    the smallest band."""
    choices = []
    for counts in itertools.product(*[range(1, 2 * len(padded_starts(n, p, step)[0]) + 1)
                                      for n, p in zip(shape_in[1:], patch_size[1:])]):
        axes = [_axis_parts(int(n), int(m), int(p), step, c)
                for n, m, p, c in zip(shape_in[1:], shape_out[1:], patch_size[1:], counts)]
        runs = math.prod(sum(part.windows[1] - part.windows[0] for part in parts) for parts in axes)
        size = voxel_bytes * math.prod(max(part.extent for part in parts) for parts in axes) + fixed_bytes
        choices.append((size > limit, size if size > limit else 0, runs, size, axes))
    *_, axes = min(choices, key=lambda choice: choice[:4])
    return [Tile(tuple(p.windows for p in parts), tuple(p.output for p in parts),
                 tuple(p.source_start for p in parts)) for parts in itertools.product(*axes)]
