"""3D from one prompted slice: the mask is carried slice by slice to the neighbours in both directions.

For the next slice, the prompts come from the mask of the slice before it, as a user would give them: the box
around it (grown by ``margin`` pixels) and a positive click at its deepest point; that slice's probability is
passed as the previous mask. Propagation stops where the object ends (fewer than ``min_area`` pixels), at the
volume's ends, or after ``max_distance`` slices. Each slice is embedded once (through ``embed``, so a caller can
reuse its cache) and decoded once.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from medseg.interactive.prompts import Box, Click, PromptSet
from medseg.interactive.segmenter import Segmenter


def prompts_from_mask(mask: np.ndarray, margin: float = 2.0) -> PromptSet | None:
    """A grown box around ``mask (H, W)`` bool and a positive click at its deepest point; None when empty."""
    import edt

    if not mask.any():
        return None
    rows, cols = np.nonzero(mask)
    shape = mask.shape
    box = Box((max(rows.min() - margin, 0), max(cols.min() - margin, 0)),
              (min(rows.max() + margin, shape[0] - 1), min(cols.max() + margin, shape[1] - 1)))
    depth = edt.edt(np.ascontiguousarray(mask, dtype=np.uint8), black_border=True)
    point = np.unravel_index(int(np.argmax(depth)), shape)
    return PromptSet([box, Click((float(point[0]), float(point[1])), True)])


def propagate_mask(segmenter: Segmenter, embed: Callable[[int], Any], num_slices: int, start: int,
                   start_probability: np.ndarray, *, min_area: int = 10, margin: float = 2.0,
                   max_distance: int | None = None) -> dict[int, np.ndarray]:
    """Probabilities ``{slice: (H, W) float32}`` for the slices reached from ``start`` (``start`` excluded).

    ``embed(index)`` returns the segmenter's embedding of slice ``index`` (cached by the caller or not).
    """
    reached: dict[int, np.ndarray] = {}
    for direction in (1, -1):
        previous = np.asarray(start_probability, np.float32)
        index = start + direction
        while 0 <= index < num_slices and (max_distance is None or abs(index - start) <= max_distance):
            mask = previous >= 0.5
            if mask.sum() < min_area:
                break
            prompts = prompts_from_mask(mask, margin)
            probability = segmenter.predict(embed(index), prompts, previous)
            if (probability >= 0.5).sum() < min_area:
                break
            reached[index] = probability
            previous = probability
            index += direction
    return reached
