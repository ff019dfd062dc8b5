"""Augmentation of a cascade's previous-stage channels: random binary morphology, as nnU-Net's cascade trainer.

The one-hot channels of the first stage's prediction (see ``medseg.preprocess.previous_stage``) are warped and
mirrored with the image but take no intensity augmentation. Instead, with probability
``p_previous_stage_morphology`` per sample and channel, one of dilation, erosion, opening or closing with a cubic
structuring element of radius uniform in ``previous_stage_morphology_radius`` is applied, so that the second
stage learns to correct the first stage's errors rather than to copy its output (nnU-Net's
``ApplyRandomBinaryOperatorTransform``, p = 0.4, sizes 1..8; its ball becomes a cube here, which max-pooling gives
in one pass). nnU-Net's removal of random connected components is not done.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medseg.transforms.config import AugmentationConfig

Tensor = torch.Tensor
OPERATORS = ("dilation", "erosion", "opening", "closing")


def dilate(mask: Tensor, radius: int) -> Tensor:
    """Binary dilation of ``(N, *spatial)`` {0, 1} float maps with a cube of edge ``2 * radius + 1``."""
    pool = F.max_pool3d if mask.ndim == 4 else F.max_pool2d
    return pool(mask[:, None], 2 * radius + 1, stride=1, padding=radius)[:, 0]


def erode(mask: Tensor, radius: int) -> Tensor:
    return 1.0 - dilate(1.0 - mask, radius)


def apply_operator(mask: Tensor, operator: str, radius: int) -> Tensor:
    """One of ``OPERATORS`` on binary maps ``(N, *spatial)``."""
    if operator == "dilation":
        return dilate(mask, radius)
    if operator == "erosion":
        return erode(mask, radius)
    if operator == "opening":
        return dilate(erode(mask, radius), radius)
    return erode(dilate(mask, radius), radius)


def random_previous_stage_morphology(channels: Tensor, config: AugmentationConfig,
                                     generator: torch.Generator) -> Tensor:
    """``(B, F, *P)`` previous-stage channels -> binary ``(B, F, *P)``, some of them changed by morphology."""
    binary = (channels > 0.5).to(channels.dtype)
    if config.p_previous_stage_morphology <= 0 or binary.numel() == 0:
        return binary
    batch, count = binary.shape[:2]
    low, high = config.previous_stage_morphology_radius
    chosen = torch.rand((batch, count), generator=generator) < config.p_previous_stage_morphology
    operators = torch.randint(0, len(OPERATORS), (batch, count), generator=generator)
    radii = torch.randint(int(low), int(high) + 1, (batch, count), generator=generator)
    for b, f in chosen.nonzero().tolist():
        binary[b, f] = apply_operator(binary[b, f][None], OPERATORS[int(operators[b, f])], int(radii[b, f]))[0]
    return binary
