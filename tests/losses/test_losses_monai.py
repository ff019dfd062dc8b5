"""Cross-checks against MONAI 1.6.1 (test-only peer) and torch on random logits and targets, 2D and 3D (1e-5)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medseg import losses as L
from medseg.losses import create

monai_losses = pytest.importorskip("monai.losses")
from monai.networks.utils import one_hot  # noqa: E402

SPATIAL = {"2d": (12, 11), "3d": (7, 6, 5)}
IGNORE = 255
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _inputs(case, dims: str, classes: int = 3, ignore: bool = False, seed: int = 0):
    logits, target = case(SPATIAL[dims], classes=classes, seed=seed, ignore_fraction=0.15 if ignore else 0.0)
    return logits.double(), target


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    torch.testing.assert_close(ours.double().reshape(theirs.shape), theirs.double(), **TOL)


@pytest.mark.parametrize("dims", ["2d", "3d"])
@pytest.mark.parametrize("onehot_target", [False, True])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"include_background": False},
        {"batch": True},
        {"squared": True, "include_background": False},
        {"class_weight": [0.2, 1.0, 3.0]},
        {"class_weight": [0.2, 1.0, 3.0], "include_background": False},  # MONAI wants [1.0, 3.0] here
        {"activation": "sigmoid", "batch": True},
        {"smooth_nr": 0.0, "smooth_dr": 1.0},
    ],
)
def test_dice_and_jaccard_match_monai(case, dims, onehot_target, options) -> None:
    logits, target = _inputs(case, dims)
    monai_target = one_hot(target, 3) if onehot_target else target
    ours_target = monai_target
    kw = dict(options)
    monai_kw = {"to_onehot_y": not onehot_target, "include_background": kw.get("include_background", True),
                "batch": kw.get("batch", False), "squared_pred": kw.get("squared", False),
                "smooth_nr": kw.get("smooth_nr", 1e-5), "smooth_dr": kw.get("smooth_dr", 1e-5)}
    monai_kw["sigmoid" if kw.get("activation") == "sigmoid" else "softmax"] = True
    if "class_weight" in kw:
        monai_kw["weight"] = torch.tensor(kw["class_weight"][0 if monai_kw["include_background"] else 1:])
    for jaccard in (False, True):
        ours = create("jaccard" if jaccard else "dice", **kw)(logits, ours_target)
        theirs = monai_losses.DiceLoss(jaccard=jaccard, **monai_kw)(logits, monai_target)
        _close(ours, theirs)
    none = create("dice", **{**kw, "reduction": "none"})(logits, ours_target)
    theirs = monai_losses.DiceLoss(reduction="none", **monai_kw)(logits, monai_target)
    _close(none, theirs)


@pytest.mark.parametrize("dims", ["2d", "3d"])
@pytest.mark.parametrize("name", ["dice", "tversky"])
def test_ignore_index_matches_monai(case, dims, name) -> None:
    logits, target = _inputs(case, dims, ignore=True)
    ours = create(name, ignore_index=IGNORE, include_background=False)(logits, target)
    cls = monai_losses.DiceLoss if name == "dice" else monai_losses.TverskyLoss
    theirs = cls(softmax=True, to_onehot_y=True, ignore_index=IGNORE, include_background=False)(logits, target)
    _close(ours, theirs)


@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_mask_matches_monai_masked_dice(case, dims) -> None:
    """With one-hot targets: MONAI masks an index map before one-hot encoding, making masked voxels label 0."""
    logits, target = _inputs(case, dims)
    mask = (torch.rand(target.shape, generator=torch.Generator().manual_seed(3)) > 0.3).double()
    ours = create("dice")(logits, target, mask)
    theirs = monai_losses.MaskedDiceLoss(softmax=True)(logits, one_hot(target, 3), mask=mask)
    _close(ours, theirs)


@pytest.mark.parametrize("dims", ["2d", "3d"])
@pytest.mark.parametrize("weight_type", ["square", "simple", "uniform"])
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("include_background", [True, False])
def test_generalized_dice_matches_monai(case, dims, weight_type, batch, include_background) -> None:
    logits, target = _inputs(case, dims, classes=4)
    target[0][target[0] == 3] = 0  # a class absent from one sample: the infinite-weight path
    ours = create("generalized_dice", weight_type=weight_type, batch=batch,
                  include_background=include_background)(logits, target)
    theirs = monai_losses.GeneralizedDiceLoss(softmax=True, to_onehot_y=True, w_type=weight_type, batch=batch,
                                              include_background=include_background)(logits, target)
    _close(ours, theirs)


@pytest.mark.parametrize("dims", ["2d", "3d"])
@pytest.mark.parametrize("alpha,beta", [(0.5, 0.5), (0.3, 0.7), (0.8, 0.1)])
@pytest.mark.parametrize("batch", [False, True])
def test_tversky_and_focal_tversky_match_monai(case, dims, alpha, beta, batch) -> None:
    logits, target = _inputs(case, dims)
    theirs = monai_losses.TverskyLoss(softmax=True, to_onehot_y=True, alpha=alpha, beta=beta, batch=batch,
                                      reduction="none")(logits, target)
    ours = create("tversky", alpha=alpha, beta=beta, batch=batch)(logits, target)
    _close(ours, theirs.mean())
    focal = create("focal_tversky", alpha=alpha, beta=beta, batch=batch, gamma=0.75)(logits, target)
    _close(focal, theirs.pow(0.75).mean())
    plain = create("focal_tversky", alpha=alpha, beta=beta, batch=batch, gamma=1.0)(logits, target)
    _close(plain, theirs.mean())


@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_log_cosh_dice_is_log_cosh_of_monai_dice(case, dims) -> None:
    logits, target = _inputs(case, dims)
    per_class = monai_losses.DiceLoss(softmax=True, to_onehot_y=True, reduction="none")(logits, target)
    _close(create("log_cosh_dice")(logits, target), torch.log(torch.cosh(per_class)).mean())


@pytest.mark.parametrize("dims", ["2d", "3d"])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"gamma": 0.0},
        {"gamma": 1.5, "alpha": 0.25},
        {"alpha": [0.2, 0.3, 0.5]},
        {"class_weight": [0.5, 1.0, 2.0]},
        {"activation": "sigmoid"},
        {"activation": "sigmoid", "alpha": 0.25, "include_background": False},
        {"activation": "sigmoid", "alpha": [0.1, 0.4, 0.6], "class_weight": [1.0, 2.0, 0.5]},
    ],
)
def test_focal_matches_monai(case, dims, options) -> None:
    logits, target = _inputs(case, dims)
    kw = dict(options)
    monai_kw = {"use_softmax": kw.get("activation", "softmax") == "softmax", "gamma": kw.get("gamma", 2.0),
                "alpha": kw.get("alpha"), "weight": kw.get("class_weight"),
                "include_background": kw.get("include_background", True)}
    for reduction in ("mean", "none"):
        ours = create("focal", reduction=reduction, **kw)(logits, target)
        theirs = monai_losses.FocalLoss(to_onehot_y=True, reduction=reduction, **monai_kw)(logits, target)
        _close(ours, theirs)


@pytest.mark.parametrize("dims", ["2d", "3d"])
@pytest.mark.parametrize("options", [{}, {"include_background": False}, {"batch": True}])
def test_boundary_matches_monai(case, dims, options) -> None:
    logits, target = _inputs(case, dims)
    for reduction in ("mean", "none"):
        ours = create("boundary", reduction=reduction, **options)(logits, target)
        theirs = monai_losses.BoundaryLoss(softmax=True, to_onehot_y=True, reduction=reduction,
                                           **options)(logits, target)
        _close(ours, theirs)


@pytest.mark.parametrize("dims", ["2d", "3d"])
@pytest.mark.parametrize("options", [{}, {"include_background": True}, {"batch": True}, {"alpha": 1.0}])
def test_hausdorff_dt_matches_monai(case, dims, options) -> None:
    logits, target = _inputs(case, dims)
    ours = create("hausdorff_dt", **options)(logits, target)
    theirs = monai_losses.HausdorffDTLoss(softmax=True, to_onehot_y=True, **options)(logits, target)
    _close(ours, theirs)


@pytest.mark.parametrize("dims", ["2d", "3d"])
@pytest.mark.parametrize("iterations", [0, 3])
def test_cldice_matches_monai_with_one_channel(case, dims, iterations) -> None:
    """MONAI pools clDice's sums over channels, medseg keeps one value per class: equal for one channel."""
    logits, target = _inputs(case, dims, classes=2)
    ours = create("cldice", iterations=iterations)(logits, target)
    theirs = monai_losses.SoftclDiceLoss(iter_=iterations, softmax=True, to_onehot_y=True,
                                         include_background=False)(logits, target)
    _close(ours, theirs)
    binary = logits[:, 1:]
    ours = create("dice_cldice", activation="sigmoid")(binary, target)
    theirs = monai_losses.SoftDiceclDiceLoss(sigmoid=True)(binary, target.double())
    _close(ours, theirs)


@pytest.mark.parametrize("dims", ["2d", "3d"])
@pytest.mark.parametrize(
    "options",
    [{}, {"include_background": False, "batch": True}, {"class_weight": [0.3, 1.0, 2.0]},
     {"lambda_dice": 0.3, "lambda_ce": 1.7}],
)
def test_dice_ce_matches_monai(case, dims, options) -> None:
    logits, target = _inputs(case, dims)
    kw = dict(options)
    monai_kw = {k: v for k, v in kw.items() if k in ("include_background", "batch", "lambda_dice", "lambda_ce")}
    if "class_weight" in kw:
        monai_kw["weight"] = torch.tensor(kw["class_weight"], dtype=torch.float64)
    ours = create("dice_ce", **kw)(logits, target)
    theirs = monai_losses.DiceCELoss(softmax=True, to_onehot_y=True, **monai_kw)(logits, target)
    _close(ours, theirs)


@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_dice_ce_and_dice_focal_with_sigmoid_match_monai(case, dims) -> None:
    """One sigmoid channel: MONAI's DiceCE switches to BCE, as medseg does. MONAI's DiceFocal always uses a
    sigmoid focal term (even with softmax=True); medseg uses the loss's activation for both terms, so the two
    are compared under a sigmoid."""
    logits, target = _inputs(case, dims, classes=2)
    binary = logits[:, 1:]
    ours = create("dice_ce", activation="sigmoid")(binary, target)
    theirs = monai_losses.DiceCELoss(sigmoid=True)(binary, target.double())
    _close(ours, theirs)
    onehot = one_hot(target, 2)
    ours = create("dice_focal", activation="sigmoid", gamma=1.5)(logits, onehot)
    theirs = monai_losses.DiceFocalLoss(sigmoid=True, gamma=1.5)(logits, onehot)
    _close(ours, theirs)


@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_deep_supervision_matches_monai_up_to_normalisation(case, dims) -> None:
    logits, target = _inputs(case, dims)
    gen = torch.Generator().manual_seed(1)
    levels = [logits] + [torch.randn((2, 3, *[max(1, s // 2**i) for s in logits.shape[2:]]), generator=gen,
                                     dtype=torch.float64) for i in (1, 2)]
    ours = L.DeepSupervisionLoss(create("dice_ce"))(levels, target)
    theirs = monai_losses.DeepSupervisionLoss(monai_losses.DiceCELoss(softmax=True, to_onehot_y=True),
                                              weight_mode="exp")(levels, target.double())
    _close(ours, theirs / sum(0.5**i for i in range(3)))


@pytest.mark.parametrize("dims", ["2d", "3d"])
@pytest.mark.parametrize(
    "options", [{}, {"class_weight": [0.2, 1.0, 3.0]}, {"label_smoothing": 0.1}, {"ignore_index": IGNORE},
                {"class_weight": [0.2, 1.0, 3.0], "label_smoothing": 0.2, "ignore_index": IGNORE}],
)
def test_cross_entropy_matches_torch(case, dims, options) -> None:
    logits, target = _inputs(case, dims, ignore="ignore_index" in options)
    torch_kw = dict(options)
    if "class_weight" in torch_kw:
        torch_kw["weight"] = torch.tensor(torch_kw.pop("class_weight"), dtype=torch.float64)
    torch_kw.setdefault("ignore_index", -100)
    for reduction in ("mean", "sum"):
        ours = create("ce", reduction=reduction, **options)(logits, target)
        theirs = F.cross_entropy(logits, target[:, 0], reduction=reduction, **torch_kw)
        _close(ours, theirs)
    if "ignore_index" not in options:  # one-hot targets give the same value (torch differs for weighted soft)
        ours = create("ce", **options)(logits, one_hot(target, 3))
        _close(ours, F.cross_entropy(logits, target[:, 0], **torch_kw))


@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_bce_matches_torch(case, dims) -> None:
    logits, target = _inputs(case, dims)
    onehot = one_hot(target, 3)
    pos_weight = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64).view(1, 3, *[1] * len(SPATIAL[dims]))
    theirs = F.binary_cross_entropy_with_logits(logits, onehot, pos_weight=pos_weight)
    _close(create("bce", pos_weight=[1.0, 2.0, 0.5])(logits, target), theirs)


@pytest.mark.parametrize("dims", ["2d", "3d"])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_focal_with_ignore_differs_from_monai_by_its_normaliser(case, dims, activation) -> None:
    """MONAI's FocalLoss averages over B*C*voxels without an ignore label but divides by the counted voxels
    alone with one (C times larger); medseg keeps the element mean in both cases."""
    logits, target = _inputs(case, dims, ignore=True)
    ours = create("focal", ignore_index=IGNORE, activation=activation)(logits, target)
    theirs = monai_losses.FocalLoss(to_onehot_y=True, ignore_index=IGNORE,
                                    use_softmax=activation == "softmax")(logits, target)
    _close(3 * ours, theirs)


@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_weighted_sum_matches_monai_generalized_dice_focal(case, dims) -> None:
    logits, target = _inputs(case, dims)
    ours = create("weighted_sum", terms={"gdl": "generalized_dice", "focal": "focal"}, activation="sigmoid",
                  weights={"gdl": 0.7, "focal": 1.3})(logits, target)
    theirs = monai_losses.GeneralizedDiceFocalLoss(sigmoid=True, to_onehot_y=True, lambda_gdl=0.7,
                                                   lambda_focal=1.3)(logits, target)
    _close(ours, theirs)
