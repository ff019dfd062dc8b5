"""The one interface every promptable method implements: the learned model, the classical baselines, and the
automatic pipeline model used as a reference. The simulator, the evaluation, the session and the server talk
only to this.

    embedding = segmenter.embed(image)                     # once per image or slice (the heavy part)
    probability = segmenter.predict(embedding, prompts, previous)   # once per interaction (the light part)

``image``: one 2D slice ``(C, H, W)`` float, as read (any intensity range; the segmenter normalises it).
``prompts``: a ``PromptSet`` on the same ``(H, W)`` pixel grid. ``previous``: the last returned probability
``(H, W)`` or None. Returns the foreground probability ``(H, W)`` float32 in [0, 1] on the image's grid; the mask
is ``probability >= 0.5``. The embedding is opaque to callers: they cache it, never look inside.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from medseg.interactive.prompts import PromptSet


@runtime_checkable
class Segmenter(Protocol):
    name: str

    def embed(self, image: np.ndarray) -> Any:
        """``image (C, H, W)`` -> an opaque embedding reused by every ``predict`` on this image."""

    def predict(self, embedding: Any, prompts: PromptSet, previous: np.ndarray | None = None) -> np.ndarray:
        """Foreground probability ``(H, W)`` float32 in [0, 1] for the prompts so far."""
