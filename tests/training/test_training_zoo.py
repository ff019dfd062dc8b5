"""The zoo in the pipeline: any registry network fitted to a plan configuration (its memory measured on the meta
device, its step timed), trained by ``medseg train --network NAME --set net.KEY=VALUE --loss NAME`` through the
one trainer into the one model folder, and predicted by the same predictor."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.config import Configuration, Normalization
from medseg.config.model_folder import read_segmentation_model
from medseg.errors import MedsegError
from medseg.inference import Predictor
from medseg.io import read_image
from medseg.nets import create
from medseg.nets.memory import inference_activation_bytes, training_activation_bytes
from medseg.planning.network_fit import check_fits_patch, fit_network, network_options
from medseg.planning.overrides import parse_network_overrides
from tests.training.conftest import tiny_dataset_and_plan


def _configuration(patch=(64, 64), batch=4) -> Configuration:
    network = {"spatial_dims": 2, "in_channels": 1, "num_classes": 3, "features_per_stage": [4, 8, 16, 32],
               "kernel_sizes": [[3, 3]] * 4, "strides": [[1, 1], [2, 2], [2, 2], [2, 2]]}
    return Configuration(name="2d", spatial_dims=2, target_spacing=[1.0, 1.0], median_shape=[64, 64],
                         normalization=[Normalization("zscore")], resampling={}, patch_size=list(patch),
                         batch_size=batch, network=network, estimated_memory_bytes=0, estimated_step_seconds=0.1,
                         num_iterations=100)


def test_inference_memory_is_the_peak_of_live_tensors_of_a_chain():
    # conv(1->4) -> relu -> conv(4->2) on 1x1x16x16 float32: input 1 KiB, each 4-channel map 4 KiB, output 2 KiB.
    # The peak holds the input, the first conv's output and the ReLU's (Sequential keeps neither alive after).
    network = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))
    unit = 16 * 16 * 4
    peak = inference_activation_bytes(network, (1, 1, 16, 16))
    assert unit * (1 + 4 + 4) <= peak <= unit * (1 + 4 + 4 + 2 + 2)  # the Sequential's own output counted once
    assert training_activation_bytes(network, (1, 1, 16, 16)) > 0
    assert next(network.parameters()).device.type == "cpu"  # measured on a copy


def test_plan_unet_memory_estimate_is_the_generic_measure():
    net = create("plan_unet", 2, 1, 3, features_per_stage=[4, 8, 16], kernel_sizes=[3, 3, 3], strides=[1, 2, 2])
    assert net.estimate_activation_memory([32, 32], 2) == training_activation_bytes(net, (2, 1, 32, 32))


def test_predictor_asks_the_network_how_many_windows_fit():
    config = _configuration()
    small = create("plan_unet", 2, 1, 3, **{k: v for k, v in config.network.items()
                                            if k not in ("spatial_dims", "in_channels", "num_classes")})
    wide = create("unet", 2, 1, 3, features=[64, 128, 256, 512])
    budget = 64 * 2**20
    p_small = Predictor([small], config, [0, 1, 2], forward_memory=budget)
    p_wide = Predictor([wide], config, [0, 1, 2], forward_memory=budget)
    assert p_small.max_forward_batch > p_wide.max_forward_batch >= 1
    assert p_wide.max_forward_batch == max(1, budget // inference_activation_bytes(wide, (1, 1, 64, 64)))


def test_networks_are_fitted_to_the_plan_patch():
    config = _configuration()
    assert network_options("unet", config)["features"] == [4, 8, 16, 32]  # one level per planned stage
    assert network_options("unetr", config)["img_size"] == [64, 64]  # built for the patch
    assert network_options("unetpp", config)["deep_supervision"] is True
    assert network_options("unet", config, {"features": [2, 4]})["features"] == [2, 4]  # --set wins
    for name in ("unet", "unetpp", "attention_unet", "umamba", "plan_resenc_unet", "swin_unetr"):
        check_fits_patch(name, network_options(name, config), [64, 64])
    with pytest.raises(MedsegError, match="unet_valid.*smaller|cannot be built"):
        check_fits_patch("unet_valid", network_options("unet_valid", config), [64, 64])
    with pytest.raises(MedsegError, match="takes prompts"):
        network_options("promptable_unet", config)


def test_fit_halves_the_batch_until_the_activations_fit_and_counts_the_budget_steps():
    config = _configuration(batch=4)
    options = network_options("unet", config)
    with torch.device("meta"):
        shadow = create("unet", **options)
    one = training_activation_bytes(shadow, (1, 1, 64, 64))
    fitted = fit_network(config, "unet", memory_bytes=int(2.5 * one), budget_seconds=30.0, measure_seconds=0.2)
    assert fitted.network_name == "unet" and fitted.batch_size == 2 and config.batch_size == 4  # a copy
    assert fitted.num_iterations == int(30.0 / fitted.estimated_step_seconds)
    assert [d.field for d in fitted.decisions[-3:]] == ["network_name", "batch_size", "num_iterations"]
    with pytest.raises(MedsegError, match="more than the"):
        fit_network(config, "unet", memory_bytes=one // 2, budget_seconds=30.0, measure_seconds=0.2)


def test_network_overrides_parse_json_and_refuse_other_keys():
    assert parse_network_overrides(["net.feature_size=24", "net.depths=[2,2]", "net.norm=batch"]) == {
        "feature_size": 24, "depths": [2, 2], "norm": "batch"}
    with pytest.raises(MedsegError, match="net.KEY=VALUE"):
        parse_network_overrides(["2d.batch_size=4"])


@pytest.mark.slow
def test_train_cli_trains_a_zoo_network_with_a_registry_loss_and_predicts_with_it(tmp_path):
    dataset, plans = tiny_dataset_and_plan(tmp_path)
    model = tmp_path / "m"
    result = CliRunner().invoke(app, ["train", str(dataset), "-c", "2d", "-f", "0", "-o", str(model), "-p",
                                      str(plans), "--network", "unetpp", "--set", "net.features=[4,8,16]",
                                      "--loss", "dice_focal", "--max-iterations", "6", "--iterations-per-epoch",
                                      "3", "--workers", "0", "--budget", "600"])
    assert result.exit_code == 0, result.output
    spec, plan, _ = read_segmentation_model(model)
    assert spec.network.name == "unetpp" and spec.network.options["features"] == [4, 8, 16]
    assert plan.configurations["2d"].network_name == "unetpp"
    train_config = json.loads((model / "fold_0" / "train_config.json").read_text())
    assert train_config["task_options"]["loss"] == "dice_focal"
    history = json.loads((model / "fold_0" / "training_log.json").read_text())["history"]
    assert history[-1]["iteration"] == 6 and len(history[-1]["val_dice"]) == 2
    predictor = Predictor.from_folder(model, tta=False)
    case = next((dataset / "imagesTr").iterdir())
    labels = predictor.predict(read_image(case))
    assert labels.array.shape == read_image(case).array.shape and set(np.unique(labels.array)) <= {0, 1, 2}
    unknown = CliRunner().invoke(app, ["train", str(dataset), "-c", "2d", "-f", "1", "-o", str(model), "-p",
                                       str(plans), "--network", "no_such_net"])
    assert unknown.exit_code == 2 and "unknown network 'no_such_net'" in unknown.output
    assert not (model / "fold_1").exists()
