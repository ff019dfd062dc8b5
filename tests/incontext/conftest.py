"""Synthetic in-context data for the tests: images holding a bright disc and a dark square, so that two tasks
(disc, square) share the same images and only the support set says which is meant."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.incontext.tasks import TaskBank


def disc_and_square(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``image (size, size)`` float32 in [0, 1], ``disc`` and ``square`` masks ``(size, size)`` bool, apart."""
    rows, cols = np.mgrid[:size, :size]
    while True:
        (r1, c1), (r2, c2) = rng.uniform(0.25 * size, 0.75 * size, (2, 2))
        if abs(r1 - r2) + abs(c1 - c2) > 0.45 * size:
            break
    radius, half = rng.uniform(0.12, 0.18) * size, rng.uniform(0.1, 0.15) * size
    disc = np.hypot(rows - r1, cols - c1) <= radius
    square = (np.abs(rows - r2) <= half) & (np.abs(cols - c2) <= half) & ~disc
    image = 0.5 + 0.4 * disc - 0.4 * square + rng.normal(0, 0.05, (size, size))
    return np.clip(image, 0, 1).astype(np.float32), disc, square


def two_task_bank(count: int, size: int, seed: int) -> TaskBank:
    """A ``TaskBank`` of ``count`` images, each in two tasks: task 0 its disc, task 1 its square."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for _ in range(count):
        image, disc, square = disc_and_square(rng, size)
        images += [image, image]
        masks += [disc, square]
    masks_u8 = (torch.from_numpy(np.array(masks)) * 255).to(torch.uint8)
    return TaskBank(torch.from_numpy(np.array(images)).half(), masks_u8, np.tile([0, 1], count),
                    np.repeat(np.arange(count), 2), ["shapes/disc", "shapes/square"], np.array([0, 0]), ["shapes"])


@pytest.fixture
def disc_square_bank():
    return two_task_bank
