"""Synthetic segmentation tasks, so that meta-training sees far more tasks than the shared datasets hold.

A task is drawn once: a number of regions, one smooth random label map (the argmax of smooth random fields),
each region's mean intensity and texture strength, the texture's scale, and which region is the structure. Every
example of the task then gets its own label map (the task's fields plus smooth per-example fields, warped by a
smooth random deformation) and its own image (region intensities + textures, blur, a multiplicative bias field,
noise). So the examples of one task share what the structure looks like, not where it is: only the support set
says which region to segment.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F


def smooth_field(generator: torch.Generator, count: int, channels: int, coarse: int, grid: Sequence[int]
                 ) -> torch.Tensor:
    """``(count, channels, *grid)``: standard normal values on a ``coarse`` x ``coarse`` grid, upsampled bicubically
    (smooth at about ``grid / coarse`` pixels)."""
    values = torch.randn((count, channels, coarse, coarse), generator=generator)
    return F.interpolate(values, size=tuple(grid), mode="bicubic", align_corners=False)


def _warp(fields: torch.Tensor, generator: torch.Generator, strength: float) -> torch.Tensor:
    """Warp ``(N, C, H, W)`` by a smooth random displacement of up to about ``strength`` of the image size."""
    n, _, h, w = fields.shape
    displacement = smooth_field(generator, n, 2, 4, (h, w)).permute(0, 2, 3, 1) * strength
    base = F.affine_grid(torch.eye(2, 3)[None].expand(n, 2, 3), (n, 1, h, w), align_corners=False)
    return F.grid_sample(fields, base + displacement, mode="bilinear", padding_mode="reflection", align_corners=False)


def _normalise(images: torch.Tensor) -> torch.Tensor:
    """Each ``(H, W)`` of ``(N, H, W)`` to [0, 1] by its minimum and maximum."""
    flat = images.reshape(images.shape[0], -1)
    low, high = flat.min(1).values, flat.max(1).values
    scale = torch.where(high > low, high - low, torch.ones_like(high))
    return ((images - low[:, None, None]) / scale[:, None, None]).clamp(0, 1)


def synthetic_task(rng: np.random.Generator, count: int, grid: Sequence[int] = (128, 128), *,
                   regions: tuple[int, int] = (3, 9), structure: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` examples of one random task: ``images (count, *grid)`` float32 in [0, 1] and ``masks (count,
    *grid)`` bool, every mask non-empty. ``structure``: which region is the target (default: a random one);
    two calls with equal ``rng`` states and different ``structure`` give the same images with different masks."""
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    n_regions = int(rng.integers(regions[0], regions[1]))
    coarse = int(rng.choice([3, 4, 6, 8]))
    task_fields = torch.randn((1, n_regions, coarse, coarse), generator=generator)
    example_fields = torch.randn((count, n_regions, coarse, coarse), generator=generator) * float(rng.uniform(0.2, 0.6))
    fields = F.interpolate(task_fields + example_fields, size=tuple(grid), mode="bicubic", align_corners=False)
    fields = _warp(fields, generator, float(rng.uniform(0.05, 0.2)))
    labels = fields.argmax(1)  # (count, H, W)
    means = torch.from_numpy(rng.uniform(0, 1, n_regions).astype(np.float32))
    strengths = torch.from_numpy(rng.uniform(-0.25, 0.25, n_regions).astype(np.float32))
    texture_scale = int(rng.choice([8, 16, 32, 64]))
    texture = smooth_field(generator, count, 1, min(texture_scale, min(grid)), grid)[:, 0]  # (count, H, W)
    images = means[labels] + strengths[labels] * texture
    sigma = float(rng.uniform(0, 1.5))
    if sigma > 0.3:
        radius = int(2 * sigma + 0.5)
        kernel = torch.exp(-torch.arange(-radius, radius + 1).float() ** 2 / (2 * sigma**2))
        kernel = (kernel / kernel.sum())[None, None]
        images = F.conv2d(F.pad(images[:, None], (radius, radius, 0, 0), mode="reflect"), kernel[..., None, :])
        images = F.conv2d(F.pad(images, (0, 0, radius, radius), mode="reflect"), kernel[..., :, None])[:, 0]
    bias = torch.exp(smooth_field(generator, count, 1, 3, grid)[:, 0] * float(rng.uniform(0, 0.3)))
    images = images * bias + torch.randn(images.shape, generator=generator) * float(rng.uniform(0, 0.08))
    areas = torch.stack([torch.bincount(m.flatten(), minlength=n_regions) for m in labels]).min(0).values
    if structure is None:
        present = torch.nonzero(areas >= 16).flatten()
        structure = int(present[int(rng.integers(len(present)))]) if len(present) else int(areas.argmax())
    masks = labels == int(structure) % n_regions
    for index in torch.nonzero(~masks.flatten(1).any(1)).flatten().tolist():  # a region missing from one example: seed it
        masks[index, grid[0] // 2 - 2: grid[0] // 2 + 2, grid[1] // 2 - 2: grid[1] // 2 + 2] = True
    return _normalise(images), masks
