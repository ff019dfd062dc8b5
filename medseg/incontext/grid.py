"""Images and masks onto the in-context model's grid and back: one grey channel windowed to [0, 1], resized to
the square grid (aspect not kept, as the training slices); probabilities resized back to the image's own grid."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from medseg.errors import MedsegError
from medseg.interactive.predictor import normalize_channels, resize


def grey(image: np.ndarray, channel: int | None = None) -> np.ndarray:
    """``image (C, H, W)`` -> ``(H, W)`` float32: the mean of an RGB image's 3 channels, otherwise ``channel``
    (default 0, e.g. FLAIR of a FLAIR + T1c MRI)."""
    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        return image
    if image.ndim != 3:
        raise MedsegError(f"expected one 2D slice (C, H, W), got an array of shape {image.shape}")
    if channel is None and image.shape[0] == 3:
        return image.mean(0)
    index = channel or 0
    if index >= image.shape[0]:
        raise MedsegError(f"channel {index} does not exist: the image has {image.shape[0]} channels",
                          fix=f"pick a channel below {image.shape[0]}")
    return image[index]


def image_to_grid(image: np.ndarray, grid: Sequence[int], channel: int | None = None) -> torch.Tensor:
    """``image (C, H, W)`` or ``(H, W)`` -> ``(1, *grid)`` float32 in [0, 1]."""
    windowed = normalize_channels(grey(image, channel)[None], 1)  # 0.5-99.5th percentiles -> [0, 1]
    array = torch.from_numpy(windowed)[None]
    return resize(array, grid)[0]


def mask_to_grid(mask: np.ndarray, grid: Sequence[int]) -> torch.Tensor:
    """``mask (H, W)`` bool -> ``(1, *grid)`` float32 in [0, 1] (area-weighted, so a thin structure that falls
    between grid points is kept as a faint mask instead of vanishing)."""
    array = torch.from_numpy(np.asarray(mask, np.float32))[None, None]
    return resize(array, grid)[0].clamp(0, 1)


def grid_to_image(probability: torch.Tensor, shape: Sequence[int]) -> np.ndarray:
    """``probability (K, *grid)`` on the model grid -> ``(K, *shape)`` float32 on the image's grid (bilinear)."""
    out = F.interpolate(probability[None].float(), size=tuple(shape), mode="bilinear", align_corners=False)
    return out[0].clamp(0, 1).cpu().numpy()
