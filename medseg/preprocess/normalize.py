"""Intensity normalisation per channel, as the plan's ``Normalization`` entries say.

Each channel's statistics (mean and std, or min and max) are taken first, on its float32 values; then the voxels are
normalised a block of rows at a time, straight into the float32 output, so that no whole-volume float copy of the
input is made beside the output (a CT volume of 512 x 512 x 300 would take 315 MB per copy).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from medseg.config import Normalization

ROWS_PER_BLOCK = 16  # first-axis rows normalised at a time

Pointwise = Callable[[np.ndarray, np.ndarray | None], np.ndarray]  # float32 rows, their mask rows -> float32 rows


def normalize(image: np.ndarray, schemes: list[Normalization], content_mask: np.ndarray | None = None) -> np.ndarray:
    """``(C, *spatial)`` -> float32 ``(C, *spatial)``; ``content_mask`` ``(*spatial)`` is used by masked z-score
    (voxels outside it become 0)."""
    pointwise = channel_transforms(image, schemes, content_mask)
    out = np.empty(image.shape, dtype=np.float32)
    for c, transform in enumerate(pointwise):
        for start in range(0, image.shape[1], ROWS_PER_BLOCK):
            block = slice(start, start + ROWS_PER_BLOCK)
            mask = content_mask[block] if content_mask is not None else None
            out[c, block] = transform(image[c, block].astype(np.float32, copy=False), mask)
    return out


def channel_transforms(image: np.ndarray, schemes: list[Normalization], content_mask: np.ndarray | None = None
                       ) -> list[Pointwise]:
    """Each channel's voxel-wise normalisation of ``image`` ``(C, *spatial)``, its statistics taken:
    ``normalize(image)[c, block] == transforms[c](image[c, block].astype(np.float32), content_mask[block])`` for any
    block of voxels (the mask only for masked z-score)."""
    return [_pointwise(image[c], scheme, content_mask) for c, scheme in enumerate(schemes)]


def _pointwise(channel: np.ndarray, scheme: Normalization, content_mask: np.ndarray | None) -> Pointwise:
    """The voxel-wise part of ``scheme`` for ``channel`` ``(*spatial)``, with the channel's statistics in it (taken
    on its float32 values, as the voxels are normalised)."""
    if scheme.scheme == "ct":
        lo, hi = scheme.clip or (float(np.float32(channel.min())), float(np.float32(channel.max())))
        return lambda x, mask: (np.clip(x, lo, hi) - scheme.mean) / max(scheme.std, 1e-8)
    if scheme.scheme == "zscore":
        if scheme.use_mask and content_mask is not None and content_mask.any():
            inside = channel[content_mask].astype(np.float32, copy=False)
            mean, std = inside.mean(), max(inside.std(), 1e-8)
            del inside
            return lambda x, mask: np.where(mask, (x - mean) / std, 0)
        values = channel.astype(np.float32, copy=False)
        mean, std = values.mean(), max(float(values.std()), 1e-8)
        del values
        return lambda x, mask: (x - mean) / std
    if scheme.scheme == "rescale01":  # per image, to [0, 1] (nnU-Net's RescaleTo01Normalization)
        low = np.float32(channel.min())
        scale = max(float(np.float32(channel.max()) - low), 1e-8)  # = max(channel - min): rounding is monotonic
        return lambda x, mask: (x - low) / scale
    if scheme.scheme == "rgb":
        return lambda x, mask: x / 255.0
    if scheme.scheme == "none":
        return lambda x, mask: x
    raise ValueError(f"unknown normalisation scheme {scheme.scheme!r}")
