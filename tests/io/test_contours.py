"""Masks as keyholed polygons: filled back by a reader that ORs a ROI's contours or by one that XORs them, every
mask comes back exactly (smooth blobs with holes and islands, pixel noise with diagonal-only neighbours)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.draw import polygon

from medseg.io.contours import fill_polygons, mask_polygons


def _union(polygons, shape) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for points in polygons:
        rows, columns = polygon(points[:, 0], points[:, 1], shape)
        mask[rows, columns] = True
    return mask


def _masks(seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        yield ndimage.gaussian_filter(rng.random((40, 40)), 1.5) > 0.5 + rng.uniform(-0.03, 0.03)  # holes, islands
        yield rng.random((12, 12)) > 0.5  # noise: saddles, one-pixel pieces and holes, the border


@pytest.mark.parametrize("seed", [0, 1])
def test_polygons_fill_back_exactly_by_or_and_by_xor(seed: int) -> None:
    for mask in _masks(seed):
        polygons = mask_polygons(mask)
        np.testing.assert_array_equal(fill_polygons(polygons, mask.shape), mask)
        np.testing.assert_array_equal(_union(polygons, mask.shape), mask)


def test_one_polygon_per_piece_and_none_for_an_empty_mask() -> None:
    mask = np.zeros((30, 30), dtype=bool)
    mask[2:20, 2:20] = True
    mask[5:9, 5:9] = mask[12:16, 12:16] = False  # two holes
    mask[6:8, 6:8] = True  # an island in the first hole
    mask[25:28, 25:28] = True  # a second piece
    polygons = mask_polygons(mask)
    assert len(polygons) == 3
    vertices = np.concatenate(polygons)
    assert np.all((vertices * 2) % 1 == 0)  # on the half-pixel lattice: no pixel centre on an edge of a cut
    assert mask_polygons(np.zeros((5, 5), dtype=bool)) == []
    np.testing.assert_array_equal(_union(polygons, mask.shape), mask)
