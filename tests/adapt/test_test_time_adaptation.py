"""Test-time adaptation (medseg.adapt.test_time): TENT changes only the norm layers' affine parameters and lowers
the entropy on shifted real images; the safeguard rolls a degenerate adaptation back; batch-norm re-estimation
gives the target statistics that prediction sees (and agrees with torch's update_bn on one batch); the CLI's bad input is exit code 2.

The model: a small 2d PlanUNet trained for a few seconds (medseg's trainer) on 8 Montgomery chest X-rays of
cxr_lungs at 8 mm; the targets: Shenzhen X-rays (the other hospital) and gamma-shifted Montgomery images."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medseg.adapt.test_time import (
    TestTimeOptions,
    adapt_predictor,
    batch_norm_layers,
    norm_affine_parameters,
    reestimate_batch_norm,
)
from medseg.adapt.test_time_safeguard import SafeguardLimits, degeneracy, mean_entropy
from medseg.errors import MedsegError
from medseg.inference import Predictor
from medseg.io import Image

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cxr_lungs"
TRAIN, SHENZHEN, HELD_OUT = range(8), range(138, 142), range(130, 133)  # cases.tsv: 0-137 Montgomery


def _case(index: int) -> str:
    return f"cxr_{index:03d}"


def _image(index: int) -> Image:
    from medseg.data import read_channels

    return read_channels([SHARED / "imagesTr" / f"{_case(index)}_0000.png"])


def _gamma(image: Image, gamma: float = 2.5) -> Image:
    """A contrast change that per-image z-scoring does not undo."""
    array = image.array.astype(np.float32) / 255.0
    return image.with_array((array ** gamma * 255.0).astype(np.float32))


def _small_plan(dataset: Path, norm: list | None = None):
    """The planner's 2d configuration, shrunk to seconds per training: 8 mm spacing (64 x 64 images), a 64 x 64
    patch, a four-stage U-Net of 8-32 features."""
    from medseg.planning import Budget, compute_fingerprint, plan_dataset

    plan = plan_dataset(compute_fingerprint(dataset), Budget("cpu", 10**9, 300, 5e9))
    config = plan.configurations["2d"]
    config.target_spacing, config.patch_size, config.batch_size = [8.0, 8.0], [64, 64], 4
    network = dict(config.network)
    network.update(features_per_stage=[8, 16, 32, 32], kernel_sizes=[[3, 3]] * 4,
                   strides=[[1, 1], [2, 2], [2, 2], [2, 2]], deep_supervision=True)
    if norm is not None:
        network["norm"] = norm
    config.network = network
    return plan


@pytest.fixture(scope="module")
def montgomery(tmp_path_factory) -> Path:
    if not (SHARED / "dataset.json").is_file():
        pytest.skip(f"real-data battery not found at {SHARED}")
    dataset = tmp_path_factory.mktemp("cxr") / "montgomery"
    (dataset / "imagesTr").mkdir(parents=True)
    (dataset / "labelsTr").mkdir()
    for index in TRAIN:
        (dataset / "imagesTr" / f"{_case(index)}_0000.png").symlink_to(SHARED / "imagesTr" / f"{_case(index)}_0000.png")
        (dataset / "labelsTr" / f"{_case(index)}.png").symlink_to(SHARED / "labelsTr" / f"{_case(index)}.png")
    spec = json.loads((SHARED / "dataset.json").read_text())
    (dataset / "dataset.json").write_text(json.dumps({**spec, "numTraining": len(TRAIN)}))
    return dataset


def _train(dataset: Path, folder: Path, norm: list | None = None) -> Path:
    from medseg.config import write_json_atomic
    from medseg.training.service import train_fold

    plans = write_json_atomic(_small_plan(dataset, norm).to_dict(), folder.parent / f"{folder.name}_plans.json")
    train_fold(dataset, "2d", "all", model_dir=folder, plans=plans, validate=False, progress=False,
               train_config={"max_iterations": 60, "iterations_per_epoch": 30, "num_workers": 0,
                                                                 "threads": 1})
    return folder


@pytest.fixture(scope="module")
def model(montgomery, tmp_path_factory) -> Path:
    return _train(montgomery, tmp_path_factory.mktemp("models") / "instance_norm")


@pytest.fixture(scope="module")
def targets() -> list[Image]:
    return [_image(i) for i in SHENZHEN] + [_gamma(_image(i)) for i in HELD_OUT]


def _mean_entropy_of_predictions(predictor: Predictor, images: list[Image]) -> float:
    values = []
    for image in images:
        _, probabilities = predictor.predict_with_probabilities(image)
        values.append(float(mean_entropy(torch.from_numpy(probabilities.array)[None])))
    return float(np.mean(values))


def test_tent_changes_only_norm_affine_parameters_and_lowers_the_entropy(model: Path, targets) -> None:
    predictor = Predictor.from_folder(model, tta=False)
    network = predictor.networks[0]
    before = {k: v.clone() for k, v in network.state_dict().items()}
    affine = set(norm_affine_parameters(network))
    entropy_before = _mean_entropy_of_predictions(predictor, targets)

    report = adapt_predictor(predictor, targets, "tent", TestTimeOptions(steps=20, learning_rate=1e-2))

    assert report.outcome == "adapted", report.summary()
    assert report.steps == 20 and report.images == len(targets)
    assert report.adapted_parameters == sum(before[name].numel() for name in affine)
    after = network.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and changed <= affine, changed - affine
    assert all(p.requires_grad for p in network.parameters())  # the flags are restored
    assert report.after["entropy"] < report.before["entropy"]
    # the predictor's own probabilities on the whole images, not only the safeguard's tiles
    assert _mean_entropy_of_predictions(predictor, targets) < entropy_before


def test_the_safeguard_rolls_back_a_collapsing_adaptation(model: Path, targets) -> None:
    predictor = Predictor.from_folder(model, tta=False)
    unadapted = [predictor.predict(image).array for image in targets[:2]]
    weights = {k: v.clone() for k, v in predictor.networks[0].state_dict().items()}

    report = adapt_predictor(predictor, targets, "tent", TestTimeOptions(steps=40, learning_rate=5.0,
                                                                         check_every=5))

    assert report.outcome == "rolled back", report.summary()
    assert report.rollback["step"] == 5 and report.rollback["restored_step"] == 0, report.rollback
    assert report.steps == 5  # training stopped at the degenerate check
    assert report.history[-1]["degenerate"] == report.rollback["reason"]
    assert all(torch.equal(weights[k], v) for k, v in predictor.networks[0].state_dict().items())
    for image, labels in zip(targets[:2], unadapted):
        np.testing.assert_array_equal(predictor.predict(image).array, labels)
    assert report.after["entropy"] == pytest.approx(report.before["entropy"], rel=1e-6)
    assert report.after["mask_dice_vs_unadapted"] == 1.0


@pytest.mark.parametrize("now, expected, agreement", [
    ({"entropy": 0.2, "foreground_fraction": [0.1]}, "collapsed", 0.9),
    ({"entropy": 0.2, "foreground_fraction": [0.7]}, "exploded", 0.9),
    ({"entropy": 0.25, "foreground_fraction": [0.35], "mask_dice_vs_unadapted": 0.85}, "trust region", 0.9),
    ({"entropy": 0.001, "foreground_fraction": [0.3], "mask_dice_vs_unadapted": 0.4}, "trust region", 0.9),
    ({"entropy": 0.001, "foreground_fraction": [0.3], "mask_dice_vs_unadapted": 0.4}, "entropy fell", 0.0),
    ({"entropy": float("nan"), "foreground_fraction": [0.3]}, "not finite", 0.9),
    ({"entropy": 0.001, "foreground_fraction": [0.3], "mask_dice_vs_unadapted": 0.95}, None, 0.9),
    ({"entropy": 0.25, "foreground_fraction": [0.45], "mask_dice_vs_unadapted": 0.8}, None, 0.0),
])
def test_degeneracy_rule(now: dict, expected: str | None, agreement: float) -> None:
    reason = degeneracy({"entropy": 0.3, "foreground_fraction": [0.3]}, now,
                        SafeguardLimits(min_mask_agreement=agreement))
    assert (reason is None) if expected is None else (expected in reason), reason


def test_bn_on_instance_norm_networks_is_a_reported_no_op(model: Path, targets) -> None:
    predictor = Predictor.from_folder(model, tta=False)
    weights = {k: v.clone() for k, v in predictor.networks[0].state_dict().items()}
    report = adapt_predictor(predictor, targets[:2], "bn")
    assert report.outcome == "unchanged" and "InstanceNorm2d" in report.reason and "no batch-norm" in report.reason
    assert all(torch.equal(weights[k], v) for k, v in predictor.networks[0].state_dict().items())


def _bn_predictor(montgomery: Path) -> Predictor:
    from medseg.nets.plan_unet import PlanUNet

    config = _small_plan(montgomery, norm=["batch", {}]).configurations["2d"]
    torch.manual_seed(0)
    network = PlanUNet.from_config({**config.network, "deep_supervision": False}).eval()
    return Predictor([network], config, [0, 1], tta=False)


def _bn_inputs(network: torch.nn.Module, batches: list[torch.Tensor]) -> dict[torch.nn.Module, torch.Tensor]:
    """Every batch-norm layer's input over ``batches`` in eval mode, ``(C, N)`` per layer."""
    seen: dict = {}
    hooks = [layer.register_forward_pre_hook(
        lambda module, inputs: seen.setdefault(module, []).append(inputs[0].transpose(0, 1).flatten(1)))
        for layer in batch_norm_layers(network)]
    network.eval()
    with torch.no_grad():
        for batch in batches:
            network(batch)
    for hook in hooks:
        hook.remove()
    return {layer: torch.cat(values, 1) for layer, values in seen.items()}


def test_bn_reestimation_gives_the_target_statistics_that_prediction_sees(montgomery: Path, targets) -> None:
    from medseg.adapt.test_time_patches import TargetPatches

    predictor = _bn_predictor(montgomery)
    network = predictor.networks[0]
    rng = np.random.default_rng(0)
    patches = TargetPatches(predictor, targets)
    batches = [patches.random_batch(4, rng) for _ in range(3)]
    assert reestimate_batch_norm(network, batches) == len(batch_norm_layers(network)) == 14
    assert not network.training and all(layer.momentum == 0.1 for layer in batch_norm_layers(network))
    # in eval mode, on the re-estimated statistics, each layer's input has exactly those statistics
    inputs = _bn_inputs(network, batches)
    assert len(inputs) == 14
    for layer, features in inputs.items():
        torch.testing.assert_close(layer.running_mean, features.mean(1), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(layer.running_var, features.var(1, unbiased=True), rtol=1e-4, atol=1e-5)


def test_bn_reestimation_agrees_with_torch_update_bn_on_one_batch(montgomery: Path, targets) -> None:
    """With every target patch in one batch, train-mode normalisation (torch's update_bn) uses the same
    statistics as the re-estimated eval-mode network, up to the biased variance train mode divides by."""
    from medseg.adapt.test_time_patches import TargetPatches

    predictor = _bn_predictor(montgomery)
    batch = TargetPatches(predictor, targets).random_batch(8, np.random.default_rng(1))
    peer = copy.deepcopy(predictor.networks[0])
    reestimate_batch_norm(predictor.networks[0], [batch])
    torch.optim.swa_utils.update_bn([batch], peer)
    for index, (mine, theirs) in enumerate(zip(batch_norm_layers(predictor.networks[0]), batch_norm_layers(peer))):
        exact = index == 0  # the first layer's input does not depend on any normalisation
        torch.testing.assert_close(mine.running_mean, theirs.running_mean, rtol=1e-4 if exact else 2e-2,
                                   atol=1e-5 if exact else 2e-3)
        torch.testing.assert_close(mine.running_var, theirs.running_var, rtol=1e-4 if exact else 2e-2,
                                   atol=1e-5 if exact else 2e-3)


def test_bn_through_adapt_predictor_moves_the_statistics_to_the_target(montgomery: Path, targets) -> None:
    predictor = _bn_predictor(montgomery)
    first = batch_norm_layers(predictor.networks[0])[0]
    assert torch.all(first.running_mean == 0) and torch.all(first.running_var == 1)  # fresh network
    report = adapt_predictor(predictor, targets, "bn")
    assert report.outcome in ("adapted", "rolled back"), report.summary()
    if report.outcome == "adapted":
        assert not torch.all(first.running_mean == 0) and report.history[0]["stage"] == "bn"
    else:  # the safeguard put the old statistics back
        assert torch.all(first.running_mean == 0)


def test_api_refusals(model: Path, targets) -> None:
    predictor = Predictor.from_folder(model, tta=False)
    with pytest.raises(MedsegError, match="unknown test-time adaptation"):
        adapt_predictor(predictor, targets, "adabn")
    with pytest.raises(MedsegError, match="no target images"):
        adapt_predictor(predictor, [], "tent")
    with pytest.raises(MedsegError, match="channel"):  # an RGB image for a grey model
        adapt_predictor(predictor, [targets[0].with_array(np.zeros((3, 512, 512), np.float32))], "tent")
    with pytest.raises(MedsegError, match="use 1 or more"):
        TestTimeOptions(steps=0)
    plain = copy.deepcopy(predictor)
    for module in plain.networks[0].modules():
        if hasattr(module, "affine") and isinstance(module, torch.nn.modules.instancenorm._InstanceNorm):
            module.weight, module.bias = None, None
    with pytest.raises(MedsegError, match="no normalisation layers with affine parameters"):
        adapt_predictor(plain, targets, "tent")


def _predict(*arguments: str):
    from medseg.cli.app import app

    return CliRunner().invoke(app, ["predict", *arguments])


def test_cli_bad_adapt_input_is_exit_2(model: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "cxr_140_0000.png").symlink_to(SHARED / "imagesTr" / "cxr_140_0000.png")
    out = tmp_path / "out"
    common = ["-i", str(images), "-o", str(out), "-m", str(model), "--no-tta"]
    for extra, message in ((["--adapt", "adabn"], "is not one of none, bn, tent"),
                           (["--adapt", "tent", "--engine", "onnxruntime"], "cannot be adapted"),
                           (["--adapt", "tent", "--dicomweb", "http://127.0.0.1:9/dicom-web", "--study", "1"],
                            "--dicomweb has none")):
        result = _predict(*common, *extra)
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
        assert not out.exists()
    out.mkdir()
    (out / "adaptation.json").write_text("{}")
    result = _predict(*common, "--adapt", "tent")
    assert result.exit_code == 2 and "--overwrite" in result.output, result.output
    assert sorted(p.name for p in out.iterdir()) == ["adaptation.json"]


@pytest.mark.slow
def test_cli_predict_with_tent_writes_the_report_beside_the_labels(model: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for index in SHENZHEN:
        (images / f"{_case(index)}_0000.png").symlink_to(SHARED / "imagesTr" / f"{_case(index)}_0000.png")
    out = tmp_path / "out"
    result = _predict("-i", str(images), "-o", str(out), "-m", str(model), "--no-tta", "--adapt", "tent")
    assert result.exit_code == 0, result.output
    assert "test-time adaptation tent:" in result.output
    report = json.loads((out / "adaptation.json").read_text())
    assert report["method"] == "tent" and report["cases"] == [_case(i) for i in SHENZHEN]
    assert report["models"][0]["outcome"] in ("adapted", "rolled back") and report["models"][0]["model"] == str(model)
    assert sorted(p.name for p in out.glob("*.png")) == [f"{_case(i)}.png" for i in SHENZHEN]
