"""Deep supervision, compounds, class weights from a fingerprint, and the losses without a peer in MONAI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medseg.errors import MedsegError
from medseg.losses import (
    DeepSupervisionLoss,
    class_weights_from_fractions,
    create,
    downsample_target,
    level_weights,
)
from medseg.losses.distance import signed_distance_map

IGNORE = 255


def test_level_weights_halve_and_normalise() -> None:
    assert level_weights(4) == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15])
    assert level_weights(3, zero_coarsest=True) == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert level_weights(2, [3.0, 1.0]) == pytest.approx([0.75, 0.25])
    assert level_weights(1, zero_coarsest=True) == [1.0]
    with pytest.raises(MedsegError, match="3 output levels"):
        level_weights(3, [1.0, 1.0])


def test_deep_supervision_is_the_weighted_sum_over_nearest_targets(case) -> None:
    logits, target = case((8, 8))
    coarse = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    dice = create("dice")
    value = DeepSupervisionLoss(dice)([logits, coarse], target)
    # nearest-exact (as MONAI, nnU-Net v2): each coarse voxel takes the fine voxel nearest its centre
    expected = 2 / 3 * dice(logits, target) + 1 / 3 * dice(coarse, target[:, :, 1::2, 1::2])
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(DeepSupervisionLoss(dice)(logits, target), dice(logits, target))


def test_pool_downsampling_gives_class_fractions_and_majority_ignore() -> None:
    target = torch.tensor([[0, 1, 2, 2], [1, 1, IGNORE, 2], [0, 0, IGNORE, IGNORE], [0, 0, IGNORE, 1]])[None, None]
    soft, mask = downsample_target(target, (2, 2), 3, mode="pool", ignore_index=IGNORE)
    assert mask[0, 0].tolist() == [[1.0, 1.0], [1.0, 0.0]]
    torch.testing.assert_close(soft[0, :, 0, 0], torch.tensor([0.25, 0.75, 0.0]))
    torch.testing.assert_close(soft[0, :, 0, 1], torch.tensor([0.0, 0.0, 1.0]))  # 3 valid voxels, all class 2
    torch.testing.assert_close(soft[0, :, 1, 1], torch.zeros(3))
    nearest, none = downsample_target(target, (2, 2), 3, mode="nearest")
    assert none is None and nearest.dtype == target.dtype and nearest.shape == (1, 1, 2, 2)


def test_deep_supervision_rejects_a_wrong_number_of_weights(case) -> None:
    logits, target = case((8, 8))
    loss = DeepSupervisionLoss(create("dice"), weights=[1.0, 0.5, 0.25])
    with pytest.raises(MedsegError, match="2 output levels"):
        loss([logits, logits[:, :, ::2, ::2]], target)


def test_class_weights_from_fingerprint_fractions() -> None:
    fractions = {"0": 0.9, "1": 0.08, "2": 0.02}
    median = class_weights_from_fractions(fractions)
    raw = [0.08 / 0.9, 1.0, 0.08 / 0.02]
    assert median == pytest.approx([w / (sum(raw) / 3) for w in raw])
    inverse = class_weights_from_fractions(fractions, method="inverse")
    assert inverse[2] / inverse[1] == pytest.approx(4.0) and sum(inverse) / 3 == pytest.approx(1.0)
    sqrt = class_weights_from_fractions(fractions, method="inverse_sqrt")
    assert sqrt[1] / sqrt[0] == pytest.approx(math.sqrt(0.9 / 0.08))
    absent = class_weights_from_fractions({"0": 0.9, "2": 0.1}, method="inverse")
    assert absent[1] == absent[2] == max(absent)
    with pytest.raises(MedsegError, match="label values"):
        class_weights_from_fractions({"background": 1.0})
    with pytest.raises(MedsegError, match="method"):
        class_weights_from_fractions(fractions, method="log")


def test_weighted_ce_from_fingerprint_equals_torch_weighted_ce(case) -> None:
    logits, target = case((6, 7))
    fractions = {"0": 0.7, "1": 0.2, "2": 0.1}
    weights = torch.tensor(class_weights_from_fractions(fractions))
    value = create("weighted_ce", class_voxel_fraction=fractions)(logits, target)
    torch.testing.assert_close(value, F.cross_entropy(logits, target[:, 0], weight=weights))


def test_combo_follows_the_paper_formula(case) -> None:
    logits, target = case((6, 7), classes=2)
    binary = logits[:, 1:]
    alpha, beta = 0.6, 0.7
    p = torch.sigmoid(binary)
    t = target.float()
    ce = -(beta * t * torch.log(p) + (1 - beta) * (1 - t) * torch.log(1 - p)).mean()
    dice = 1 - (2 * (p * t).sum((1, 2, 3)) + 1e-5) / (p.sum((1, 2, 3)) + t.sum((1, 2, 3)) + 1e-5)
    expected = alpha * ce + (1 - alpha) * dice.mean()
    value = create("combo", alpha=alpha, beta=beta, activation="sigmoid")(binary, target)
    torch.testing.assert_close(value, expected)


def test_exp_log_against_a_direct_numpy_computation(case) -> None:
    logits, target = case((5, 6), classes=3)
    weights = [0.5, 1.0, 2.0]
    value = create("exp_log", class_weight=weights)(logits, target)
    p = torch.softmax(logits, 1).numpy().astype(np.float64)
    labels = target[:, 0].numpy()
    onehot = np.eye(3)[labels].transpose(0, 3, 1, 2)
    dice = (2 * (p * onehot).sum((2, 3)) + 1) / ((p + onehot).sum((2, 3)) + 1)
    dice_term = ((-np.log(dice)) ** 0.3).mean()
    p_true = np.take_along_axis(p, labels[:, None], 1)[:, 0]
    ce_term = (np.array(weights)[labels] * (-np.log(p_true)) ** 0.3).mean()
    assert float(value) == pytest.approx(0.8 * dice_term + 0.2 * ce_term, rel=1e-5)


def test_weighted_sum_of_named_losses_routes_shared_options(case) -> None:
    logits, target = case((6, 7))
    loss = create("weighted_sum", terms={"dice": "dice", "bd": "boundary"}, weights={"dice": 1.0, "bd": 0.1},
                  include_background=False)
    assert loss.terms["dice"].options == {"include_background": False}
    parts = loss.components(logits, target)
    torch.testing.assert_close(loss(logits, target), parts["dice"] + 0.1 * parts["bd"])
    with pytest.raises(MedsegError, match="compound"):
        create("weighted_sum", terms={"x": "dice_ce"})


def test_boundary_signed_distance_follows_kervadec_and_spacing() -> None:
    mask = torch.zeros(1, 1, 7, 7)
    mask[0, 0, 2:5, 2:5] = 1
    phi = signed_distance_map(mask)[0, 0]
    assert float(phi[3, 3]) == -1.0 and float(phi[2, 2]) == 0.0 and float(phi[3, 0]) == 2.0
    phi_mm = signed_distance_map(mask, spacing=(1.0, 2.0))[0, 0]
    assert float(phi_mm[3, 0]) == 4.0 and float(phi_mm[0, 3]) == 2.0
    assert torch.count_nonzero(signed_distance_map(torch.zeros(1, 1, 4, 4))) == 0
