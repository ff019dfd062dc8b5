"""Propagating one slice's mask through a volume."""

from __future__ import annotations

import numpy as np

from medseg.interactive.prompts import Box, Click, PromptSet
from medseg.interactive.propagate import prompts_from_mask, propagate_mask


class ComponentSegmenter:
    """Test double: the bright connected region under the prompts' positive clicks (a perfect segmenter for
    bright objects on a dark background), so the test checks propagation's bookkeeping, not a model."""

    name = "component"

    def embed(self, image):
        return image[0] > 0.5

    def predict(self, embedding, prompts, previous=None):
        from scipy.ndimage import label

        components, _ = label(embedding)
        out = np.zeros(embedding.shape, np.float32)
        for click in prompts.clicks:
            value = components[int(click.point[0]), int(click.point[1])]
            if click.positive and value:
                out[components == value] = 1.0
        return out


def test_prompts_from_mask_are_a_grown_box_and_the_deepest_point():
    mask = np.zeros((20, 30), bool)
    mask[5:12, 10:21] = True
    prompts = prompts_from_mask(mask, margin=2)
    box, click = prompts.prompts
    assert isinstance(box, Box) and box.start == (3, 8) and box.stop == (13, 22)
    assert isinstance(click, Click) and click.positive and mask[int(click.point[0]), int(click.point[1])]
    assert click.point[0] == 8.0 and 13 <= click.point[1] <= 17  # on the ridge 4 px from every side
    assert prompts_from_mask(np.zeros((5, 5), bool)) is None


def test_propagation_fills_the_object_in_both_directions_and_stops_where_it_ends():
    z, y, x = np.mgrid[:30, :40, :40]
    ellipsoid = ((z - 14) / 8.0) ** 2 + ((y - 20) / 10.0) ** 2 + ((x - 18) / 12.0) ** 2 <= 1
    volume = np.where(ellipsoid, 0.9, 0.1)[None].astype(np.float32)  # (C, Z, Y, X)
    segmenter = ComponentSegmenter()
    embedded = []

    def embed(index):
        embedded.append(index)
        return segmenter.embed(volume[:, index])

    start = segmenter.predict(embed(14), PromptSet([Click((20, 18))]))
    reached = propagate_mask(segmenter, embed, 30, 14, start, min_area=3)
    object_slices = set(np.flatnonzero(ellipsoid.reshape(30, -1).sum(1) >= 3)) - {14}
    assert set(reached) == object_slices
    for index, probability in reached.items():
        np.testing.assert_array_equal(probability >= 0.5, ellipsoid[index])
    assert sorted(embedded) == sorted({14} | object_slices | {min(object_slices) - 1, max(object_slices) + 1})
    limited = propagate_mask(segmenter, lambda i: segmenter.embed(volume[:, i]), 30, 14, start, max_distance=2)
    assert set(limited) == {12, 13, 15, 16}
