"""The interaction simulator on synthetic discs, rings and bars: first prompts, corrections, modes, empty targets."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from medseg.errors import MedsegError
from medseg.interactive.prompts import Box, Click, Scribble, render_scribbles
from medseg.interactive.simulate import (MODES, corrective_prompt, first_box, first_click, first_scribble,
                                         initial_prompts, inner_distance, largest_error, next_click, next_scribble)

SHAPE = (64, 80)


def disc(centre=(30, 40), radius=12, shape=SHAPE) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[disk(centre, radius, shape=shape)] = True
    return mask


def ring() -> np.ndarray:
    return disc(radius=14) & ~disc(radius=9)


def inside(mask: np.ndarray, point) -> bool:
    return bool(mask[int(round(point[0])), int(round(point[1]))])


def test_first_click_is_at_the_maximum_of_the_distance_transform() -> None:
    target = disc()
    click = first_click(target)
    assert click == Click((30.0, 40.0), positive=True)
    distance = inner_distance(target)
    assert distance[30, 40] == distance.max()


def test_first_click_with_tolerance_stays_near_the_centre_and_varies() -> None:
    target, rng = disc(), np.random.default_rng(0)
    distance = inner_distance(target)
    clicks = [first_click(target, rng, tolerance=0.3) for _ in range(20)]
    assert all(inside(target, c.point) for c in clicks)
    assert all(distance[int(c.point[0]), int(c.point[1])] >= 0.7 * distance.max() for c in clicks)
    assert len({c.point for c in clicks}) > 5


def test_first_click_on_a_ring_is_inside_the_ring_not_its_hole() -> None:
    target = ring()
    click = first_click(target)
    assert inside(target, click.point)
    assert 10 <= np.hypot(click.point[0] - 30, click.point[1] - 40) <= 13


def test_image_border_counts_as_boundary() -> None:
    target = np.zeros(SHAPE, bool)
    target[:, :30] = True  # a band touching three image edges: its deepest points are 15 px from every edge
    row, col = first_click(target).point
    assert col in (14, 15) and 14 <= row <= 49


def test_first_box_is_tight_and_jitter_stays_within_bounds() -> None:
    target = disc()
    assert first_box(target) == Box((19.0, 29.0), (41.0, 51.0))  # skimage's disk: distance < radius
    rng = np.random.default_rng(1)
    side = 23
    boxes = [first_box(target, rng, jitter=0.1) for _ in range(50)]
    for box in boxes:
        for got, tight in zip((*box.start, *box.stop), (19, 29, 41, 51)):
            assert abs(got - tight) <= 0.1 * side + 0.5
    assert len({(b.start, b.stop) for b in boxes}) > 10
    with pytest.raises(MedsegError, match="random generator"):
        first_box(target, None, jitter=0.1)


def test_box_frames_the_largest_component_of_a_scattered_object() -> None:
    target = np.zeros(SHAPE, bool)
    target[5:15, 5:15] = True  # a small polyp
    target[35:60, 50:75] = True  # the large one: a box around both would be mostly background
    assert first_box(target) == Box((35.0, 50.0), (59.0, 74.0))


def test_jittered_box_is_clipped_to_the_image() -> None:
    target = np.zeros(SHAPE, bool)
    target[0:10, 70:80] = True
    rng = np.random.default_rng(2)
    for _ in range(30):
        box = first_box(target, rng, jitter=0.5)
        assert 0 <= box.start[0] <= box.stop[0] <= SHAPE[0] - 1
        assert 0 <= box.start[1] <= box.stop[1] <= SHAPE[1] - 1


@pytest.mark.parametrize("make", [disc, ring], ids=["disc", "ring"])
def test_positive_scribble_lies_inside_the_object(make) -> None:
    target, rng = make(), np.random.default_rng(3)
    for _ in range(10):
        scribble = first_scribble(target, rng)
        assert isinstance(scribble, Scribble) and scribble.positive
        drawn = render_scribbles([scribble], SHAPE, radius=1) > 0
        assert drawn.sum() >= 8  # a stroke, not a dot
        assert not (drawn & ~target).any()


def test_negative_scribble_lies_outside_the_object_and_near_it() -> None:
    target, rng = disc(), np.random.default_rng(4)
    scribble = first_scribble(target, rng, positive=False)
    assert not scribble.positive
    drawn = render_scribbles([scribble], SHAPE, radius=1) > 0
    assert drawn.sum() >= 8 and not (drawn & target).any()
    rows, cols = np.nonzero(drawn)
    assert np.hypot(rows - 30, cols - 40).max() <= 12 + 2 * 3.0 + 2


def test_next_click_is_positive_in_a_missed_region_and_at_its_deepest_point() -> None:
    target = disc()
    prediction = target.copy()
    prediction[:, 40:] = False  # the right half is missed
    click = next_click(prediction, target)
    missed = target & ~prediction
    assert click.positive and inside(missed, click.point)
    assert inner_distance(missed)[int(click.point[0]), int(click.point[1])] == inner_distance(missed).max()


def test_next_click_is_negative_in_the_largest_false_positive_region() -> None:
    target = disc()
    prediction = target | disc(centre=(10, 70), radius=6)  # a spurious blob
    prediction[30, 40] = False  # a one-pixel hole: a smaller error
    click = next_click(prediction.astype(np.float32), target)  # probabilities are thresholded at 0.5
    assert not click.positive
    assert np.hypot(click.point[0] - 10, click.point[1] - 70) <= 1.5


def test_largest_error_prefers_the_larger_region() -> None:
    target = disc()
    prediction = target.copy()
    prediction[disk((30, 40), 4)] = False  # missed: ~49 px
    prediction |= disc(centre=(55, 10), radius=2)  # spurious: ~13 px
    region, missed = largest_error(prediction, target)
    assert missed and region.sum() == (target & ~prediction).sum()


def test_next_scribble_lies_inside_the_error_region() -> None:
    target, prediction = disc(), disc(radius=8)
    scribble = next_scribble(prediction, target, np.random.default_rng(5))
    assert scribble.positive
    drawn = render_scribbles([scribble], SHAPE, radius=1) > 0
    assert not (drawn & ~(target & ~prediction)).any()


def test_exact_prediction_and_empty_target_give_no_prompt() -> None:
    target, rng = disc(), np.random.default_rng(0)
    empty = np.zeros(SHAPE, bool)
    assert next_click(target, target) is None and next_scribble(target, target, rng) is None
    assert first_click(empty) is None and first_box(empty) is None and first_scribble(empty, rng) is None
    for mode in MODES:
        assert initial_prompts(mode, empty, rng) is None
        assert corrective_prompt(mode, target, target, rng) is None


def test_modes_give_their_prompt_kinds() -> None:
    target, rng = disc(), np.random.default_rng(0)
    wrong = np.zeros(SHAPE, bool)
    kinds = {mode: type(initial_prompts(mode, target, rng).prompts[0]) for mode in MODES}
    assert kinds == {"clicks": Click, "box": Box, "scribbles": Scribble, "box+clicks": Box}
    assert isinstance(corrective_prompt("clicks", wrong, target, rng), Click)
    assert isinstance(corrective_prompt("box+clicks", wrong, target, rng), Click)
    assert isinstance(corrective_prompt("scribbles", wrong, target, rng), Scribble)
    assert corrective_prompt("box", wrong, target, rng) is None  # box only: one box, no corrections
    with pytest.raises(MedsegError, match="unknown interaction mode"):
        initial_prompts("lasso", target, rng)


def test_same_seed_same_prompts() -> None:
    target = ring()
    a = initial_prompts("scribbles", target, np.random.default_rng(7))
    b = initial_prompts("scribbles", target, np.random.default_rng(7))
    assert a.prompts == b.prompts


def test_masks_must_be_2d() -> None:
    with pytest.raises(MedsegError, match="2D"):
        first_click(np.ones((2, 4, 4), bool))
