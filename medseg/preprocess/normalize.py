"""Intensity normalisation per channel, as the plan's ``Normalization`` entries say."""

from __future__ import annotations

import numpy as np

from medseg.config import Normalization


def normalize(image: np.ndarray, schemes: list[Normalization], content_mask: np.ndarray | None = None) -> np.ndarray:
    """``(C, *spatial)`` -> float32 ``(C, *spatial)``; ``content_mask`` ``(*spatial)`` is used by masked z-score
    (voxels outside it become 0)."""
    out = np.empty(image.shape, dtype=np.float32)
    for c, scheme in enumerate(schemes):
        channel = image[c].astype(np.float32, copy=False)
        if scheme.scheme == "ct":
            lo, hi = scheme.clip or (float(channel.min()), float(channel.max()))
            out[c] = (np.clip(channel, lo, hi) - scheme.mean) / max(scheme.std, 1e-8)
        elif scheme.scheme == "zscore":
            if scheme.use_mask and content_mask is not None and content_mask.any():
                inside = channel[content_mask]
                out[c] = np.where(content_mask, (channel - inside.mean()) / max(inside.std(), 1e-8), 0)
            else:
                out[c] = (channel - channel.mean()) / max(float(channel.std()), 1e-8)
        elif scheme.scheme == "rescale01":  # per image, to [0, 1] (nnU-Net's RescaleTo01Normalization)
            shifted = channel - channel.min()
            out[c] = shifted / max(float(shifted.max()), 1e-8)
        elif scheme.scheme == "rgb":
            out[c] = channel / 255.0
        elif scheme.scheme == "none":
            out[c] = channel
        else:
            raise ValueError(f"unknown normalisation scheme {scheme.scheme!r}")
    return out
