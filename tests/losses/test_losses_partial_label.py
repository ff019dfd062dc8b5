"""Partial-label losses: marginal (softmax, merged background) and masked (sigmoid, annotated classes only)."""

from __future__ import annotations

import pytest
import torch

from medseg.errors import MedsegError
from medseg.losses import DeepSupervisionLoss, PartialLabelLoss, create, merge_unannotated

IGNORE = 255


def _partial_case(case, spatial=(6, 7), classes=4):
    logits, target = case(spatial, classes=classes, seed=11)
    annotated = torch.tensor([[True, True, False, True], [True, False, True, False]])
    for b in range(2):  # unannotated classes are labelled background in the data
        for c in range(classes):
            if not annotated[b, c]:
                target[b][target[b] == c] = 0
    return logits, target, annotated


def test_merged_logits_give_the_marginal_probabilities(case) -> None:
    logits, _, annotated = _partial_case(case)
    p = torch.softmax(logits, 1)
    merged = torch.softmax(merge_unannotated(logits, annotated), 1)
    torch.testing.assert_close(merged[0, 0], p[0, 0] + p[0, 2])
    torch.testing.assert_close(merged[1, 0], p[1, 0] + p[1, 1] + p[1, 3])
    torch.testing.assert_close(merged[0, 3], p[0, 3])
    assert float(merged[0, 2].max()) == 0.0 and float(merged[1, 1].max()) == 0.0


def test_marginal_ce_is_the_log_of_the_merged_probability(case) -> None:
    logits, target, annotated = _partial_case(case)
    value = PartialLabelLoss(create("ce"))(logits, target, annotated=annotated)
    p = torch.softmax(logits, 1)
    merged_bg = p[:, 0] + (p[:, 1:] * (~annotated[:, 1:]).float()[..., None, None]).sum(1)
    p_true = torch.where(target[:, 0] == 0, merged_bg, p.gather(1, target).squeeze(1))
    torch.testing.assert_close(value, -torch.log(p_true).mean())


def test_fully_annotated_cases_give_the_plain_loss(case) -> None:
    logits, target = case((6, 7), classes=3, seed=12)
    everything = torch.ones(2, 3, dtype=torch.bool)
    for name in ("ce", "dice", "dice_ce", "focal"):
        loss = create(name)
        torch.testing.assert_close(PartialLabelLoss(loss)(logits, target, annotated=everything),
                                   loss(logits, target))


def test_predicting_an_unannotated_class_on_background_is_not_penalised(case) -> None:
    _, target, annotated = _partial_case(case)
    onehot = torch.nn.functional.one_hot(target[:, 0], 4).movedim(-1, 1).float()
    logits = 20 * (2 * onehot - 1)
    background = target[0, 0] == 0  # case 0 lacks class 2: calling its background "2" costs nothing
    logits[0, 2] = torch.where(background, 20.0, -20.0)
    logits[0, 0] = torch.where(background, -20.0, logits[0, 0])
    marginal = PartialLabelLoss(create("dice_ce"))(logits, target, annotated=annotated)
    assert float(marginal) < 1e-4
    assert float(create("dice_ce")(logits, target)) > 0.5


def test_masked_mode_averages_the_annotated_classes(case) -> None:
    logits, target, annotated = _partial_case(case)
    base = create("dice_ce", activation="sigmoid")
    loss = PartialLabelLoss(base, mode="masked")
    dice = base.terms["dice"].unreduced(logits, target)
    bce = base.terms["ce"].unreduced(logits, target).mean((2, 3))
    w = annotated.float()
    expected = ((dice * w).sum(1) / w.sum(1)).mean() + ((bce * w).sum(1) / w.sum(1)).mean()
    logits.requires_grad_(True)
    value = loss(logits, target, annotated=annotated)
    torch.testing.assert_close(value, expected)
    value.backward()
    missing = (~annotated)[..., None, None].expand_as(logits)
    assert torch.count_nonzero(logits.grad[missing]) == 0
    assert torch.count_nonzero(logits.grad[~missing]) > 0


def test_partial_label_with_deep_supervision_and_ignore(case) -> None:
    logits, target, annotated = _partial_case(case, spatial=(8, 8))
    target[:, :, :2, :2] = IGNORE
    levels = [logits.requires_grad_(True), torch.randn(2, 4, 4, 4, requires_grad=True)]
    loss = DeepSupervisionLoss(PartialLabelLoss(create("dice_ce", ignore_index=IGNORE)))
    value = loss(levels, target, annotated=annotated)
    value.backward()
    assert torch.isfinite(value)
    assert torch.count_nonzero(logits.grad[:, :, :2, :2]) == 0


def test_partial_label_errors(case) -> None:
    logits, target, annotated = _partial_case(case)
    with pytest.raises(MedsegError, match="not annotated"):
        PartialLabelLoss(create("ce"))(logits, target.clamp(max=2).fill_(2), annotated=annotated)
    with pytest.raises(MedsegError, match="masked"):
        PartialLabelLoss(create("dice"), mode="masked")
    with pytest.raises(MedsegError, match="one flag per case"):
        PartialLabelLoss(create("dice"))(logits, target, annotated=annotated[:, :3])
