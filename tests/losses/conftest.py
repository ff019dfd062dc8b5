"""Fixtures for the loss tests: small random logits and targets from an explicit generator."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

IGNORE = 255

# registry entries that need arguments to be built at all
REQUIRED_KWARGS: dict[str, dict] = {
    "weighted_ce": {"class_voxel_fraction": {"0": 0.7, "1": 0.2, "2": 0.1}},
    "weighted_sum": {"terms": {"dice": "dice", "boundary": "boundary"}, "weights": {"dice": 1.0, "boundary": 0.1}},
}


def random_case(
    spatial: tuple[int, ...],
    *,
    batch: int = 2,
    classes: int = 3,
    seed: int = 0,
    ignore_fraction: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(B, C, *spatial)`` and an index-map target ``(B, 1, *spatial)`` with blob-like classes.

    Every class is present in every sample (so distance maps are not trivial); with ``ignore_fraction`` that
    share of voxels is labelled IGNORE.
    """
    gen = torch.Generator().manual_seed(seed)
    logits = (2 * torch.randn((batch, classes, *spatial), generator=gen)).to(dtype)
    smooth = torch.nn.functional.avg_pool2d if len(spatial) == 2 else torch.nn.functional.avg_pool3d
    noise = smooth(torch.rand((batch, classes, *spatial), generator=gen), 3, 1, 1)
    target = noise.argmax(1, keepdim=True)
    for b in range(batch):
        for c in range(classes):
            target[(b, 0, *[c % s for s in spatial])] = c
    if ignore_fraction:
        target[torch.rand(target.shape, generator=gen) < ignore_fraction] = IGNORE
    return logits, target


@pytest.fixture
def case() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    return random_case


@pytest.fixture
def required_kwargs() -> dict[str, dict]:
    return REQUIRED_KWARGS
