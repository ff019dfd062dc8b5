"""What the classical methods share: channels normalised to [0, 1], Gaussian smoothing, a seeded voxel sample,
regions ranked by brightness, and running a slow method on a coarser grid."""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage

SAMPLE_VOXELS = 50_000


MIN_CONTENT_FRACTION = 0.01


def content_mask(image: np.ndarray) -> np.ndarray | None:
    """``(*S)`` bool: the voxels where some channel of ``image (C, *S)`` differs from its constant background (the
    value all its corners share, else 0: ``medseg.planning.fingerprint.content_mask``, the rule preprocessing crops
    by; a skull-stripped brain, an endoscope's field of view); None when that is (nearly) every voxel, or under
    ``MIN_CONTENT_FRACTION`` of them (no background to leave out)."""
    from medseg.planning.fingerprint import content_mask as differs_from_background

    mask = differs_from_background(image)
    fraction = mask.mean()
    return mask if MIN_CONTENT_FRACTION <= fraction < 0.98 else None


def normalise(image: np.ndarray, content: np.ndarray | None = None, low: float = 0.5, high: float = 99.5
              ) -> np.ndarray:
    """``image (C, *S)`` -> float32 ``(C, *S)`` in [0, 1], each channel clipped to its ``low`` / ``high``
    percentiles over the ``content`` voxels (all without a mask; robust to hot pixels and specular highlights); a
    constant channel becomes 0."""
    image = np.asarray(image, dtype=np.float32)
    out = np.zeros_like(image)
    for index, channel in enumerate(image):
        lo, hi = np.percentile(channel if content is None else channel[content], [low, high])
        if hi > lo:
            out[index] = np.clip((channel - lo) / (hi - lo), 0, 1)
    return out


def smoothed(scalar: np.ndarray, sigma: float) -> np.ndarray:
    """``scalar (*S)`` Gaussian-smoothed by ``sigma`` voxels (unchanged for 0)."""
    return ndimage.gaussian_filter(scalar, float(sigma)) if sigma > 0 else scalar


def sample_voxels(features: np.ndarray, seed: int, count: int = SAMPLE_VOXELS) -> np.ndarray:
    """At most ``count`` rows of ``features (voxels, C)``, drawn without replacement by a seeded generator."""
    if len(features) <= count:
        return features
    return features[np.random.default_rng(seed).choice(len(features), count, replace=False)]


def rank_by_mean(regions: np.ndarray, image: np.ndarray) -> np.ndarray:
    """``regions (*S)`` of ids ``0..n-1`` renumbered ``(*S)`` int32 so that id 0 has the lowest mean brightness
    (the channel mean of ``image (C, *S)``) and so on; ids without voxels rank last."""
    ids = regions.astype(np.int64).ravel()
    brightness = image.mean(axis=0).ravel()
    count = int(ids.max()) + 1
    sums = np.bincount(ids, weights=brightness, minlength=count)
    sizes = np.bincount(ids, minlength=count)
    means = np.where(sizes > 0, sums / np.maximum(sizes, 1), np.inf)
    rank_of = np.empty(count, np.int32)
    rank_of[np.argsort(means, kind="stable")] = np.arange(count, dtype=np.int32)
    return rank_of[regions]


def on_coarse_grid(method: Callable[[np.ndarray], np.ndarray], array: np.ndarray, max_voxels: int, *,
                   channels: int | None = None, has_channels: bool = False) -> np.ndarray:
    """``method`` applied to ``array`` (``(*S)``, or ``(K, *S)`` with ``has_channels``) on a grid coarsened by the
    smallest factor per axis that leaves at most ``max_voxels`` voxels (linear resampling with anti-aliasing,
    ``skimage.transform.resize``), its result (``(*s)``, or ``(channels, *s)``) resampled linearly back to ``S``.
    Small arrays go to ``method`` as they are."""
    from skimage.transform import resize

    spatial = array.shape[1:] if has_channels else array.shape
    voxels = int(np.prod(spatial))
    if voxels <= max_voxels:
        return method(array)
    factor = (voxels / max_voxels) ** (1 / len(spatial))
    coarse_shape = tuple(max(1, int(n // factor)) for n in spatial)

    def resampled(values: np.ndarray, shape: tuple[int, ...], down: bool) -> np.ndarray:
        return resize(values, shape, order=1, anti_aliasing=down, preserve_range=True).astype(np.float32)

    coarse = np.stack([resampled(a, coarse_shape, True) for a in array]) if has_channels else \
        resampled(array, coarse_shape, True)
    result = method(coarse)
    if channels is None:
        return resampled(result.astype(np.float32), spatial, False)
    return np.stack([resampled(r.astype(np.float32), spatial, False) for r in result])
