"""Tiles of the plane for streamed prediction: the cut with the fewest window runs whose band fits the limit."""

from __future__ import annotations

import numpy as np

from medseg.inference.sliding_window import padded_starts
from medseg.inference.tiles import plane_tiles


def _runs(tiles, rows: int) -> int:
    return rows * sum(int(np.prod([b - a for a, b in tile.windows])) for tile in tiles)


def _band(tiles, shape, patch, voxel_bytes: int) -> int:
    extents = []
    for tile in tiles:
        sizes = []
        for n, p, (first, last) in zip(shape[1:], patch[1:], tile.windows):
            starts, _ = padded_starts(n, p)
            sizes.append(starts[last - 1] + p - starts[first])
        extents.append(int(np.prod(sizes)))
    return voxel_bytes * max(extents)


def test_tiles_cover_the_output_once_and_fit_the_limit_with_the_fewest_runs() -> None:
    shape, patch, voxel = (300, 512, 512), (64, 128, 128), 64 * 16 * 4  # 15 classes and the weight sum, float32
    windows = len(padded_starts(512, 128)[0]) ** 2
    assert plane_tiles(shape, shape, patch, 0.5, voxel_bytes=voxel, limit=10 ** 12)[0].windows == ((0, 7), (0, 7))
    limit = 256 * 2 ** 20
    tiles = plane_tiles(shape, shape, patch, 0.5, voxel_bytes=voxel, fixed_bytes=2 ** 20, limit=limit)
    covered = np.zeros(shape[1:], int)
    for tile in tiles:
        covered[tuple(slice(a, b) for a, b in tile.output)] += 1
    assert (covered == 1).all()
    assert _band(tiles, shape, patch, voxel) + 2 ** 20 <= limit
    assert windows < _runs(tiles, 1) <= 2.5 * windows  # the border windows run more than once, not every window
    smallest = plane_tiles(shape, shape, patch, 0.5, voxel_bytes=51 * 4, limit=1)  # nothing fits: the smallest band
    assert _band(smallest, shape, patch, 51 * 4) == 51 * 4 * 192 * 192  # two windows across per axis


def test_tiles_of_a_resampled_plane_hold_every_source_row_their_output_reads() -> None:
    from medseg.inference.restore import source_rows

    shape_in, shape_out, patch = (40, 150, 97), (30, 211, 120), (16, 32, 32)
    for tile in plane_tiles(shape_in, shape_out, patch, 0.5, voxel_bytes=8, limit=1):
        for n_in, n_out, p, (first, last), (a, b), start in zip(shape_in[1:], shape_out[1:], patch[1:], tile.windows,
                                                                 tile.output, tile.source_start):
            starts, _ = padded_starts(n_in, p)
            lower, upper, _ = source_rows(n_in, n_out)
            assert start == starts[first] and starts[first] <= lower[a] and upper[b - 1] < starts[last - 1] + p
            # every window that reaches those rows is the tile's
            reaching = [i for i, s in enumerate(starts) if s <= upper[b - 1] and s + p > lower[a]]
            assert reaching == list(range(first, last))
