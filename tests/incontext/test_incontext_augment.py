"""Task augmentation changes a task the same way for all its examples; erosion and dilation agree with scipy;
synthetic tasks share their images across structures and always hold the structure."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from medseg.incontext.augment import dilate, erode, in_task_augment, task_augment
from medseg.incontext.synthetic import synthetic_task


def test_dilation_and_erosion_agree_with_scipy():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 20, 20)) > 0.7
    square = np.ones((5, 5), bool)
    for i, mask in enumerate(masks):
        assert np.array_equal(dilate(torch.from_numpy(masks).float(), 2)[i].numpy() > 0.5,
                              ndimage.binary_dilation(mask, square))
        assert np.array_equal(erode(torch.from_numpy(masks).float(), 2)[i].numpy() > 0.5,
                              ndimage.binary_erosion(mask, square, border_value=1))


def test_task_level_transforms_are_the_same_for_every_example():
    rng = np.random.default_rng(0)
    image, mask = torch.rand(1, 16, 16), (torch.rand(1, 16, 16) > 0.5).float()
    for seed in range(8):
        images, masks = task_augment(image.repeat(3, 1, 1), mask.repeat(3, 1, 1), np.random.default_rng(seed),
                                     probability=1.0)
        assert torch.equal(images[0], images[2]) and torch.equal(masks[0], masks[1])
    images, _ = in_task_augment(image.repeat(3, 1, 1), mask.repeat(3, 1, 1), rng, probability=1.0)
    assert not torch.equal(images[0], images[1])  # in-task: each example its own draw


def test_synthetic_tasks_share_images_across_structures_and_hold_the_structure():
    images_a, masks_a = synthetic_task(np.random.default_rng(3), 4, (32, 32), structure=0)
    images_b, masks_b = synthetic_task(np.random.default_rng(3), 4, (32, 32), structure=1)
    assert torch.equal(images_a, images_b) and not torch.equal(masks_a, masks_b)
    for seed in range(5):
        images, masks = synthetic_task(np.random.default_rng(seed), 3, (32, 32))
        assert images.shape == masks.shape == (3, 32, 32) and float(images.min()) >= 0 and float(images.max()) <= 1
        assert bool(masks.flatten(1).any(1).all())
