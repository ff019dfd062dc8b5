"""Augmentation of in-context tasks, as UniverSeg's: task-level transforms change the task itself and apply to
every example of it alike (flips, 90-degree turns, intensity inversion, erosion or dilation of the labels);
in-task transforms differ per example (small affine warps, contrast, gamma, noise).

Shapes: ``images (N, H, W)`` float32 in [0, 1], ``masks (N, H, W)`` float32 in [0, 1] (soft support masks are
allowed); the N examples of one task (target and support together).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F


def dilate(masks: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grey dilation of ``(N, H, W)`` by a square of half-width ``pixels``."""
    return F.max_pool2d(masks[:, None], 2 * pixels + 1, stride=1, padding=pixels)[:, 0]


def erode(masks: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grey erosion of ``(N, H, W)`` by a square of half-width ``pixels``."""
    return -dilate(-masks, pixels)


def task_augment(images: torch.Tensor, masks: torch.Tensor, rng: np.random.Generator, *, probability: float = 0.5
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """One draw of the task-level transforms, applied to all N examples; an erosion that would empty a mask is
    skipped."""
    if rng.random() < probability:
        images, masks = images.flip(-1), masks.flip(-1)
    if rng.random() < probability:
        images, masks = images.flip(-2), masks.flip(-2)
    if images.shape[-1] == images.shape[-2] and rng.random() < probability:
        turns = int(rng.integers(1, 4))
        images, masks = torch.rot90(images, turns, (-2, -1)), torch.rot90(masks, turns, (-2, -1))
    if rng.random() < probability / 2:
        images = 1 - images
    if rng.random() < probability / 2:
        pixels = int(rng.integers(1, 3))
        if rng.random() < 0.5:
            masks = dilate(masks, pixels)
        else:
            eroded = erode(masks, pixels)
            if bool((eroded.flatten(1) >= 0.5).any(1).all()):
                masks = eroded
    return images, masks


def affine_matrices(rng: np.random.Generator, count: int, *, degrees: float = 15, scale: float = 0.1,
                    shift: float = 0.05) -> torch.Tensor:
    """``(count, 2, 3)`` random rotation / isotropic scale / translation matrices for ``F.affine_grid``."""
    matrices = []
    for _ in range(count):
        angle = math.radians(rng.uniform(-degrees, degrees))
        zoom = rng.uniform(1 - scale, 1 + scale)
        tx, ty = rng.uniform(-2 * shift, 2 * shift, 2)  # affine_grid's frame spans [-1, 1]
        c, s = math.cos(angle) / zoom, math.sin(angle) / zoom
        matrices.append([[c, -s, tx], [s, c, ty]])
    return torch.tensor(matrices, dtype=torch.float32)


def in_task_augment(images: torch.Tensor, masks: torch.Tensor, rng: np.random.Generator, *,
                    probability: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example transforms: an affine warp (with ``probability``), contrast/brightness and gamma, Gaussian
    noise."""
    n = images.shape[0]
    warp = torch.from_numpy(rng.random(n) < probability)
    if warp.any():
        grid = F.affine_grid(affine_matrices(rng, int(warp.sum())), (int(warp.sum()), 1, *images.shape[1:]),
                             align_corners=False)
        images, masks = images.clone(), masks.clone()
        images[warp] = F.grid_sample(images[warp][:, None], grid, padding_mode="border", align_corners=False)[:, 0]
        masks[warp] = F.grid_sample(masks[warp][:, None], grid, padding_mode="zeros", align_corners=False)[:, 0]
    gamma = torch.from_numpy(np.exp(rng.uniform(-0.3, 0.3, n)).astype(np.float32))[:, None, None]
    contrast = torch.from_numpy(rng.uniform(0.8, 1.2, n).astype(np.float32))[:, None, None]
    brightness = torch.from_numpy(rng.uniform(-0.1, 0.1, n).astype(np.float32))[:, None, None]
    images = ((images.clamp(0, 1) ** gamma - 0.5) * contrast + 0.5 + brightness)
    sigma = torch.from_numpy(rng.uniform(0, 0.05, n).astype(np.float32))[:, None, None]
    noise = torch.from_numpy(rng.standard_normal(images.shape).astype(np.float32))
    return (images + sigma * noise).clamp(0, 1), masks
