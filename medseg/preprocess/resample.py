"""Resampling arrays to a target spacing: images by third-order spline, label maps by one-hot linear.

Anisotropic data (``separate_z``) is resampled in-plane first (per slice) and through-plane second with its own
order (nearest by default), as nnU-Net does, so that thick slices are not smeared into each other.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def new_shape(shape: tuple[int, ...], spacing: list[float], target: list[float]) -> tuple[int, ...]:
    """Spatial shape after resampling from ``spacing`` to ``target`` (both in array order, mm)."""
    return tuple(max(1, int(round(s * sp / t))) for s, sp, t in zip(shape, spacing, target))


def resample_image(image: np.ndarray, shape: tuple[int, ...], *, order: int = 3, separate_z: bool = False,
                   z_order: int = 0) -> np.ndarray:
    """``(C, *spatial)`` float -> ``(C, *shape)`` float32, pixel-centre aligned (``grid_mode``)."""
    if tuple(image.shape[1:]) == tuple(shape):
        return image.astype(np.float32, copy=False)
    return np.stack([_resample_channel(c.astype(np.float32, copy=False), shape, order, separate_z, z_order)
                     for c in image])


def resample_label(label: np.ndarray, shape: tuple[int, ...], *, separate_z: bool = False) -> np.ndarray:
    """``(1, *spatial)`` integer label map -> ``(1, *shape)``: each class's one-hot mask is resampled linearly
    and every voxel takes the class with the largest interpolated value."""
    if tuple(label.shape[1:]) == tuple(shape):
        return label
    values = np.unique(label)
    best = np.full(shape, -1.0, dtype=np.float32)
    out = np.zeros(shape, dtype=label.dtype)
    for value in values:
        mask = (label[0] == value).astype(np.float32)
        resampled = _resample_channel(mask, shape, 1, separate_z, 0)
        better = resampled > best
        out[better] = value
        best[better] = resampled[better]
    return out[None]


def _resample_channel(channel: np.ndarray, shape: tuple[int, ...], order: int, separate_z: bool,
                      z_order: int) -> np.ndarray:
    factors = [n / o for n, o in zip(shape, channel.shape)]
    if separate_z and channel.ndim == 3:
        in_plane = np.stack([ndimage.zoom(s, factors[1:], order=order, mode="nearest", grid_mode=True)
                             for s in channel])
        if shape[0] == channel.shape[0]:
            return in_plane
        return ndimage.zoom(in_plane, (factors[0], 1, 1), order=z_order, mode="nearest", grid_mode=True)
    return ndimage.zoom(channel, factors, order=order, mode="nearest", grid_mode=True)
