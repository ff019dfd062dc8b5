"""What the server sends for pictures and masks: PNG bytes of a slice, and masks as run-length codes."""

from __future__ import annotations

import io

import numpy as np


def png_bytes(pixels: np.ndarray) -> bytes:
    """PNG of ``(H, W)`` grey, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA uint8 pixels (fast, light compression)."""
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def mask_rle(mask: np.ndarray) -> dict:
    """Run lengths of a ``(H, W)`` mask in row-major order, alternating background and object runs and starting
    with a background run (0 when the first pixel is object): ``{"shape": [H, W], "counts": [...]}``."""
    flat = np.asarray(mask, bool).reshape(-1)
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts.insert(0, 0)
    return {"shape": [int(s) for s in mask.shape], "counts": counts}


def rle_mask(rle: dict) -> np.ndarray:
    """The ``(H, W)`` bool mask of ``mask_rle``'s output (its inverse)."""
    values = np.arange(len(rle["counts"])) % 2 == 1
    return np.repeat(values, rle["counts"]).reshape(rle["shape"])
