"""The "Loss Functions in MONAI" example of the core lecture (seeds/000_*, around line 1690), reproduced by medseg.

B=3, 2 classes, 64x64; the prediction is a square of half-width 0.5, the target a circle of radius 0.5, logits
are log-odds of the (almost) binary masks, softmax on, MONAI's default arguments. The expected figures come from
running that very code with MONAI 1.6.1. The lecture's printed comments round some of them wrongly (Tversky
"0.84" is 0.0836, Dice "0.09" is 0.0836): the computation is trusted here, not the comments.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.losses import create

EXPECTED = {  # MONAI 1.6.1 on the lecture's code, 4 decimals
    "ce": 2.1227,
    "focal": 1.0613,
    "dice": 0.0836,
    "jaccard": 0.1509,
    "tversky": 0.0836,  # alpha = beta = 0.5
    "hausdorff_dt": 0.7480,
    "dice_ce": 2.2063,
    "dice_focal": 1.1450,
}


def _lecture_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batch, height, width, radius = 3, 64, 64, 0.5
    xx, yy = np.meshgrid(np.linspace(-1, 1, width), np.linspace(-1, 1, height))
    circle = xx**2 + yy**2 <= radius**2
    square = (np.abs(xx) <= radius) & (np.abs(yy) <= radius)
    target = torch.from_numpy(circle).long().repeat(batch, 1, 1)[:, None]  # (B, 1, H, W) index map
    pred = torch.from_numpy(square).float().repeat(batch, 1, 1)
    pred = torch.stack([1 - pred, pred], dim=1)
    logits = torch.log((pred + 1e-8) / (1 - pred + 1e-8))
    onehot = torch.cat([1 - target, target], dim=1).float()
    perfect = torch.log((onehot + 1e-8) / (1 - onehot + 1e-8))
    return logits, target, perfect


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("encoding", ["index", "onehot"])
def test_lecture_example_figures(name: str, encoding: str) -> None:
    logits, target, _ = _lecture_inputs()
    if encoding == "onehot":
        target = torch.cat([1 - target, target], dim=1)
    value = float(create(name)(logits, target))
    assert round(value, 3) == round(EXPECTED[name], 3)
    assert value == pytest.approx(EXPECTED[name], abs=1e-4)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_lecture_example_perfect_prediction_is_zero(name: str) -> None:
    _, target, perfect = _lecture_inputs()
    assert abs(float(create(name)(perfect, target))) < 1e-6


def test_lecture_example_printed_comments_are_rounded_wrongly() -> None:
    """The lecture prints Tversky as 0.84 and Dice as 0.09; both are 0.0836 (0.08 to two decimals)."""
    logits, target, _ = _lecture_inputs()
    dice, tversky = float(create("dice")(logits, target)), float(create("tversky")(logits, target))
    assert round(dice, 2) == 0.08 and round(tversky, 2) == 0.08
    assert dice == pytest.approx(tversky, abs=1e-7)
