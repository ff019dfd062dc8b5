"""Mirroring test-time augmentation: predict on flipped copies, flip the outputs back, average.

All flipped copies of a batch go through the network together (in chunks of at most ``max_batch`` samples):
one large batch uses a CPU's cores far better than many batches of one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch

from medseg.inference.sliding_window import PredictFn


def flip_combinations(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of ``axes``, the empty one (no flip) first: ``2 ** len(axes)`` entries."""
    axes = sorted(set(int(a) for a in axes))
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def mirrored_copies(predict: PredictFn, axes: Sequence[int], *, max_batch: int | None = None
                    ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Wrap ``predict`` (``(B, C, *spatial)`` -> ``(B, K, *spatial)``) into ``(B, C, *spatial)`` ->
    ``(M, B, K, *spatial)``: ``predict`` on each of the ``M = 2 ** len(axes)`` flipped copies, flipped back
    (``flip_combinations`` order, the unflipped copy first)."""
    combos = flip_combinations(axes)

    def predict_copies(x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        stacked = torch.cat([x.flip([a + 2 for a in combo]) if combo else x for combo in combos])
        limit = max_batch or stacked.shape[0]
        outputs = torch.cat([predict(chunk) for chunk in stacked.split(limit)])
        parts = [outputs[index * batch:(index + 1) * batch] for index in range(len(combos))]
        return torch.stack([part.flip([a + 2 for a in combo]) if combo else part
                            for part, combo in zip(parts, combos)])

    return predict_copies


def mirrored(predict: PredictFn, axes: Sequence[int], *, max_batch: int | None = None) -> PredictFn:
    """Wrap ``predict`` (``(B, C, *spatial)`` -> ``(B, K, *spatial)``) into its mirroring-TTA average.

    ``axes`` are spatial axes (0 is the first spatial axis, i.e. tensor dimension 2). The result for each input
    is ``mean over subsets A of axes of flip_A(predict(flip_A(x)))``; with ``axes=()`` it is ``predict`` itself.
    """
    if len(flip_combinations(axes)) == 1:
        return predict
    copies = mirrored_copies(predict, axes, max_batch=max_batch)
    return lambda x: copies(x).mean(0)
