"""Prompt encoding and coordinate mapping."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.errors import MedsegError
from medseg.interactive.prompts import (PROMPT_CHANNELS, Box, Click, PromptSet, Scribble, encode_prompts,
                                        grid_factor)


def test_each_prompt_lands_in_its_own_channel_at_its_place():
    prompts = PromptSet([Click((10, 20)), Click((40, 5), positive=False), Box((5, 6), (14, 30)),
                         Scribble(((50, 50), (50, 60))), Scribble(((60, 10), (62, 10)), positive=False)])
    maps = encode_prompts(prompts, (64, 80), radius=2.0)
    assert maps.shape == (PROMPT_CHANNELS, 64, 80) and maps.dtype == np.float32
    assert maps[0, 10, 20] == 1 and maps[0, 10, 23] == 0 and maps[0].sum() == 9  # the 3x3 pixels closer than 2
    assert maps[1, 40, 5] == 1 and maps[0, 40, 5] == 0
    assert maps[2, 50, 50:61].all() and maps[2, 50, 55] == 1 and maps[3, 60:63, 10].all()
    assert maps[4].sum() == (14 - 5 + 1) * (30 - 6 + 1) and maps[4, 5, 6] == 1 and maps[4, 14, 30] == 1
    assert maps[5].sum() == 0


def test_previous_probability_fills_the_last_channel_and_must_match_the_grid():
    previous = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    maps = encode_prompts(PromptSet([Click((3, 3))]), (32, 32), previous)
    np.testing.assert_array_equal(maps[5], previous)
    with pytest.raises(MedsegError, match="previous mask"):
        encode_prompts(PromptSet(), (32, 32), np.zeros((16, 16)))


def test_prompts_outside_the_grid_are_clipped_to_its_edge():
    maps = encode_prompts(PromptSet([Click((-5, 100))]), (20, 20), radius=1.5)
    assert maps[0, 0, 19] == 1


def test_scaling_maps_pixel_centres_to_pixel_centres_and_back():
    prompts = PromptSet([Click((0, 0)), Box((0, 0), (99, 149)), Scribble(((10, 20), (30, 40)))])
    factor = grid_factor((100, 150), (128, 128))
    there = prompts.scaled(factor)
    assert there.boxes[0].stop == pytest.approx((99.5 * 1.28 - 0.5, 149.5 * 128 / 150 - 0.5))
    back = there.scaled(grid_factor((128, 128), (100, 150)))
    assert back.clicks[0].point == pytest.approx((0.0, 0.0), abs=1e-9)
    assert np.allclose(back.scribbles[0].points, ((10, 20), (30, 40)))


def test_prompt_set_undo_and_type_check():
    prompts = PromptSet().add(Click((1, 1))).add(Box((0, 0), (3, 3)))
    assert isinstance(prompts.undo(), Box) and len(prompts) == 1
    assert prompts.undo() is not None and prompts.undo() is None
    with pytest.raises(MedsegError, match="not a prompt"):
        prompts.add((1, 2))
    with pytest.raises(MedsegError, match="at least one point"):
        Scribble(())
