"""Overlay pictures: an image slice with the reference outline and the prediction filled, as a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLOURS = np.array([[0, 0, 0], [230, 60, 60], [60, 200, 90], [70, 120, 230], [240, 200, 40], [200, 80, 220],
                    [60, 210, 210]], dtype=np.float32)


def overlay_slice(image: np.ndarray, prediction: np.ndarray, reference: np.ndarray | None = None,
                  *, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 ``(Y, X, 3)`` from a grey ``image`` ``(Y, X)``, a label ``prediction`` ``(Y, X)`` (filled, one
    colour per label) and an optional ``reference`` ``(Y, X)`` (drawn as white outlines)."""
    from scipy import ndimage

    low, high = np.percentile(image, [0.5, 99.5])
    grey = np.clip((image - low) / max(high - low, 1e-8), 0, 1) * 255
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
    labels = prediction.astype(np.int64)
    filled = labels > 0
    colours = COLOURS[1 + (labels[filled] - 1) % (len(COLOURS) - 1)]
    rgb[filled] = (1 - alpha) * rgb[filled] + alpha * colours
    if reference is not None:
        for value in np.unique(reference):
            if value == 0:
                continue
            mask = reference == value
            outline = mask & ~ndimage.binary_erosion(mask)
            rgb[outline] = 255
    return rgb.astype(np.uint8)


def save_overlay(image: np.ndarray, prediction: np.ndarray, reference: np.ndarray | None, path: str | Path,
                 *, scale: int = 4) -> Path:
    """Write the overlay of the slice with the most reference (or predicted) foreground of 3D inputs
    ``(Z, Y, X)``, or of 2D inputs ``(Y, X)``, enlarged ``scale`` times (nearest), as a PNG."""
    from medseg.io import Image, write_image

    if image.ndim == 3:
        weights = (reference if reference is not None else prediction).reshape(image.shape[0], -1)
        index = int(np.argmax((weights > 0).sum(axis=1)))
        image, prediction = image[index], prediction[index]
        reference = reference[index] if reference is not None else None
    rgb = overlay_slice(image, prediction, reference)
    rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    return write_image(Image.from_array(np.moveaxis(rgb, -1, 0), channel_axis=True), Path(path))
