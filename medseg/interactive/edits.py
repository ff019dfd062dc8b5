"""Manual edits of a slice's mask beside the model: a brush (or eraser) stroke, filling holes, keeping the largest
component. Each takes and returns ``(H, W)`` bool; the pixel grid is the slice's, coordinates ``(row, col)``
pixels with the centre of pixel ``[r, c]`` at ``(r, c)``, as for prompts."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from medseg.errors import MedsegError

EDITS = ("paint", "erase", "fill_holes", "largest_component")
MAX_BRUSH_RADIUS = 256


def stroke_pixels(points: Sequence[Sequence[float]], radius: float, shape: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` bool: the pixels whose centre lies within ``radius`` pixels of the polyline through ``points``
    (one point: a disc). A radius of 0 paints the pixels the line passes through the centre of (the nearest pixel
    of each point)."""
    if not len(points):
        raise MedsegError("a brush stroke needs 'points': [[row, col], ...]")
    if not 0 <= radius <= MAX_BRUSH_RADIUS:
        raise MedsegError(f"brush radius {radius} is outside 0..{MAX_BRUSH_RADIUS} pixels")
    line = np.asarray(points, np.float64).reshape(-1, 2)
    reach = max(float(radius), 0.5)
    low = np.floor(line.min(axis=0) - reach).astype(int).clip(0, np.array(shape) - 1)
    high = np.ceil(line.max(axis=0) + reach).astype(int).clip(0, np.array(shape) - 1)
    rows, cols = np.mgrid[low[0]:high[0] + 1, low[1]:high[1] + 1]
    centres = np.stack([rows, cols], -1).astype(np.float64)  # (h, w, 2)
    nearest = np.full(rows.shape, np.inf)
    segments = zip(line, line[1:]) if len(line) > 1 else [(line[0], line[0])]
    for start, stop in segments:
        direction = stop - start
        length = float(direction @ direction)
        t = np.zeros(rows.shape) if length == 0 else np.clip((centres - start) @ direction / length, 0, 1)
        closest = start + t[..., None] * direction
        nearest = np.minimum(nearest, np.hypot(*np.moveaxis(centres - closest, -1, 0)))
    out = np.zeros(shape, bool)
    out[low[0]:high[0] + 1, low[1]:high[1] + 1] = nearest <= (radius if radius > 0 else 0.5)
    return out


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every background region that does not touch the border filled."""
    return ndimage.binary_fill_holes(np.asarray(mask, bool))


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Only the largest 8-connected component of ``mask`` (an empty mask stays empty)."""
    labels, count = ndimage.label(np.asarray(mask, bool), structure=np.ones((3, 3), bool))
    if count <= 1:
        return labels > 0
    sizes = np.bincount(labels.reshape(-1))[1:]
    return labels == 1 + int(np.argmax(sizes))


def apply_edit(mask: np.ndarray, kind: str, *, points: Sequence[Sequence[float]] = (),
               radius: float = 0.0) -> np.ndarray:
    """The ``(H, W)`` bool mask after edit ``kind`` (one of ``EDITS``); ``points`` and ``radius`` for a brush."""
    mask = np.asarray(mask, bool)
    if kind == "paint":
        return mask | stroke_pixels(points, radius, mask.shape)
    if kind == "erase":
        return mask & ~stroke_pixels(points, radius, mask.shape)
    if kind == "fill_holes":
        return fill_holes(mask)
    if kind == "largest_component":
        return largest_component(mask)
    raise MedsegError(f"unknown edit {kind!r}", fix=f"use one of {', '.join(EDITS)}")
