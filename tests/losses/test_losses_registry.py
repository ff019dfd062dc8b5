"""Contract tests generated from the registry: every loss, 2D and 3D, softmax and sigmoid, gradients, ignore
label, deep supervision, one-hot vs index targets, errors."""

from __future__ import annotations

import pytest
import torch

from medseg.errors import MedsegError
from medseg.losses import DeepSupervisionLoss, create, list_losses
from medseg.losses.modules import Loss

IGNORE = 255
NAMES = list_losses()
SIGMOID_NAMES = [n for n in NAMES if n not in ("ce", "weighted_ce")]
SINGLE_NAMES = [n for n in NAMES if not n.startswith(("dice_", "nnunet_", "combo", "weighted_sum"))]


def _build(name: str, required: dict, **kw) -> torch.nn.Module:
    return create(name, **{**required.get(name, {}), **kw})


def test_registry_lists_the_issue_taxonomy() -> None:
    expected = {"ce", "weighted_ce", "bce", "focal", "dice", "jaccard", "generalized_dice", "tversky",
                "focal_tversky", "log_cosh_dice", "exp_log", "boundary", "hausdorff_dt", "cldice", "combo",
                "dice_ce", "dice_focal", "weighted_sum"}
    assert expected <= set(NAMES)


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(MedsegError, match="dice_ce") as info:
        create("dice_cee")
    assert "unknown loss 'dice_cee'" in str(info.value)


def test_create_drops_none_kwargs_and_rejects_unknown_options() -> None:
    assert create("dice", smooth_nr=None).options == {}
    with pytest.raises(MedsegError, match="smooth_nr"):
        create("dice", smoth_nr=1.0)
    with pytest.raises(MedsegError, match="no term"):
        create("dice_ce", gama=2.0)


@pytest.mark.parametrize("name", NAMES)
def test_every_loss_has_a_docstring_with_a_paper_and_shapes(name: str, required_kwargs) -> None:
    loss = _build(name, required_kwargs)
    terms = loss.terms.values() if hasattr(loss, "terms") else [loss]
    for term in terms:
        doc = type(term).__doc__ or ""
        assert "Paper" in doc and "Shapes" in doc, type(term).__name__


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("spatial", [(9, 8), (5, 6, 4)], ids=["2d", "3d"])
def test_index_and_onehot_targets_agree_and_perfect_prediction_is_minimal(name, spatial, case,
                                                                          required_kwargs) -> None:
    logits, target = case(spatial)
    loss = _build(name, required_kwargs)
    onehot = torch.nn.functional.one_hot(target[:, 0], 3).movedim(-1, 1)
    value = loss(logits, target)
    assert value.ndim == 0 and torch.isfinite(value)
    torch.testing.assert_close(loss(logits, onehot), value)
    perfect = 30.0 * (2 * onehot.float() - 1)
    assert float(loss(perfect, target)) < float(value.detach())


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_float64_softmax(name, case, required_kwargs) -> None:
    logits, target = case((4, 5), seed=1, dtype=torch.float64)
    loss = _build(name, required_kwargs)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: loss(x, target), (logits,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", SIGMOID_NAMES)
def test_gradcheck_float64_sigmoid_3d(name, case, required_kwargs) -> None:
    logits, target = case((3, 4, 3), seed=2, dtype=torch.float64)
    loss = _build(name, required_kwargs, activation="sigmoid")
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: loss(x, target), (logits,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("spatial", [(9, 8), (5, 6, 4)], ids=["2d", "3d"])
def test_ignored_voxels_get_no_gradient_and_do_not_change_the_loss(name, spatial, case, required_kwargs) -> None:
    logits, target = case(spatial, seed=3, ignore_fraction=0.2)
    ignored = (target == IGNORE).expand_as(logits)
    assert ignored.any()
    loss = _build(name, required_kwargs, ignore_index=IGNORE)
    logits.requires_grad_(True)
    value = loss(logits, target)
    value.backward()
    assert torch.isfinite(value)
    assert torch.count_nonzero(logits.grad[ignored]) == 0
    assert torch.count_nonzero(logits.grad[~ignored]) > 0
    changed = torch.where(ignored, torch.randn_like(logits) * 5, logits.detach())
    torch.testing.assert_close(loss(changed, target), value.detach())


@pytest.mark.parametrize("name", NAMES)
def test_a_mask_acts_like_the_ignore_label(name, case, required_kwargs) -> None:
    logits, target = case((8, 9), seed=4, ignore_fraction=0.2)
    with_label = _build(name, required_kwargs, ignore_index=IGNORE)(logits, target)
    mask = (target != IGNORE).float()
    with_mask = _build(name, required_kwargs)(logits, torch.where(target == IGNORE, 0, target), mask)
    torch.testing.assert_close(with_mask, with_label)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("downsample", ["nearest", "pool"])
def test_every_loss_works_with_deep_supervision_and_ignore(name, downsample, case, required_kwargs) -> None:
    logits, target = case((8, 8, 8), seed=5, ignore_fraction=0.1)
    gen = torch.Generator().manual_seed(6)
    levels = [logits.clone().requires_grad_(True)] + [
        torch.randn((2, 3, 8 // 2**i, 8 // 2**i, 8 // 2**i), generator=gen).requires_grad_(True) for i in (1, 2)]
    loss = DeepSupervisionLoss(_build(name, required_kwargs, ignore_index=IGNORE), downsample=downsample)
    value = loss(levels, target)
    value.backward()
    assert value.ndim == 0 and torch.isfinite(value)
    assert all(level.grad is not None and torch.count_nonzero(level.grad) > 0 for level in levels)
    ignored = (target == IGNORE).expand_as(logits)
    assert torch.count_nonzero(levels[0].grad[ignored]) == 0


@pytest.mark.parametrize("name", SINGLE_NAMES)
def test_batch_of_one_equals_the_per_sample_value(name, case, required_kwargs) -> None:
    """Reduction 'none' of a per-sample loss splits the batch: sample 0 alone gives its row."""
    loss = _build(name, required_kwargs)
    assert isinstance(loss, Loss)
    logits, target = case((7, 6), seed=7)
    rows = loss.unreduced(logits, target)
    alone = loss.unreduced(logits[:1], target[:1])
    torch.testing.assert_close(rows[:1], alone)


def test_errors_name_the_problem(case) -> None:
    logits, target = case((6, 6))
    with pytest.raises(MedsegError, match="outside 0..2"):
        create("dice")(logits, target + 1)
    with pytest.raises(MedsegError, match="does not fit"):
        create("dice")(logits, target[..., :5])
    with pytest.raises(MedsegError, match="sigmoid"):
        create("dice")(logits[:, :1], target.clamp(max=1))
    with pytest.raises(MedsegError, match="class_weight has 2 values"):
        create("dice", class_weight=[1.0, 2.0])(logits, target)
    with pytest.raises(MedsegError, match="reduction"):
        create("dice", reduction="avg")(logits, target)


@pytest.mark.parametrize("name", SIGMOID_NAMES)
def test_single_channel_sigmoid_binary_segmentation(name, case, required_kwargs) -> None:
    logits, target = case((7, 6), classes=2, seed=8)
    binary = logits[:, 1:].clone().requires_grad_(True)
    loss = _build(name, required_kwargs, activation="sigmoid")
    value = loss(binary, target)
    value.backward()
    assert value.ndim == 0 and torch.isfinite(value) and torch.count_nonzero(binary.grad) > 0
    perfect = 30.0 * (2 * target.float() - 1)
    assert float(loss(perfect, target)) < float(value.detach())
