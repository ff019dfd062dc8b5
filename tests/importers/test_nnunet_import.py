"""``medseg import nnunet``: a tiny nnU-Net v2 model folder (nnU-Net's schema, built by the test) becomes a medseg
model folder that ``Predictor`` loads and predicts with; what medseg cannot represent or read is one MedsegError,
and through the CLI one line with exit code 2, with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.config.model_folder import read_fold_weights, read_segmentation_model
from medseg.errors import MedsegError
from medseg.importers import import_nnunet
from medseg.inference import Predictor
from medseg.io import Image
from medseg.nets.plan_unet import PlanUNet

FEATURES = [4, 8]


def _network(dims: int = 3) -> PlanUNet:
    torch.manual_seed(0)
    return PlanUNet(spatial_dims=dims, in_channels=1, num_classes=3, features_per_stage=FEATURES,
                    kernel_sizes=[3, 3], strides=[1, 2])


class CustomTrainerState:
    """A class object inside a checkpoint: loading it would need this module's code."""

    def __init__(self):
        self.value = 1


def _cli(*args) -> object:
    return CliRunner().invoke(app, ["import", "nnunet", *map(str, args)])


def test_imported_model_loads_and_predicts(tmp_path, nnunet):
    network = _network()
    folder = nnunet.write_folder(tmp_path / "results", nnunet.plans_json([16, 16, 16], FEATURES, scheme="CTNormalization"),
                          nnunet.nnunet_keys(network), folds=(0, 1))
    report = import_nnunet(folder, tmp_path / "model")
    assert report.folds == ["0", "1"] and report.network == "plan_unet" and report.label_values == [0, 1, 2]
    assert report.mirror_axes == [0, 1, 2] and report.notes == []
    spec, plan, dataset = read_segmentation_model(tmp_path / "model")
    config = plan.configurations["3d_fullres"]
    assert spec.configuration == "3d_fullres" and spec.label_values == [0, 1, 2]
    assert config.normalization[0].scheme == "ct" and config.normalization[0].clip == [10.0, 800.0]
    assert (config.normalization[0].mean, config.normalization[0].std) == (300.0, 120.0)
    assert config.resampling == {"image_order": 3, "z_order": 0, "label": "one_hot_linear", "separate_z": False}
    assert config.patch_size == [16, 16, 16] and dataset.channel_names == ["MRI"]
    assert spec.extra["imported_from"]["trainer"] == "nnUNetTrainer"
    weights = read_fold_weights(tmp_path / "model", 0)
    assert torch.equal(weights["encoder.0.0.conv.weight"], network.state_dict()["encoder.0.0.conv.weight"])
    assert torch.equal(weights["heads.0.conv.bias"], network.state_dict()["heads.0.conv.bias"])

    predictor = Predictor.from_folder(tmp_path / "model", folds=[0])
    rng = np.random.default_rng(0)
    image = Image.from_array(rng.normal(300, 100, (1, 20, 18, 16)).astype(np.float32), spacing=(1.0, 1.0, 1.0),
                             channel_axis=True)
    labels = predictor.predict(image)
    assert labels.array.shape == (1, 20, 18, 16)
    assert set(np.unique(labels.array)) <= {0, 1, 2}
    # the same network on the same normalised input: medseg's prediction is this network's argmax
    data = torch.from_numpy((np.clip(image.array, 10, 800) - 300) / 120).float()
    probabilities = predictor.predict_preprocessed(data)
    assert np.array_equal(probabilities.argmax(0).numpy(), labels.array[0])


def test_transposed_plans_are_imported_in_image_axis_order(tmp_path, nnunet):
    plans = nnunet.plans_json([8, 16, 12], FEATURES, transpose=[2, 0, 1])
    plans["configurations"]["3d_fullres"]["spacing"] = [3.0, 1.0, 2.0]  # nnU-Net's transposed order (x, z, y)
    folder = nnunet.write_folder(tmp_path / "results", plans, nnunet.nnunet_keys(_network()), mirroring=(0, 1))
    report = import_nnunet(folder, tmp_path / "model", folds=["0"])
    _, plan, _ = read_segmentation_model(tmp_path / "model")
    config = plan.configurations["3d_fullres"]
    assert config.patch_size == [16, 12, 8] and config.target_spacing == [1.0, 2.0, 3.0]
    assert report.mirror_axes == [0, 2]  # nnU-Net's axes 0, 1 are the image's x and z
    assert any("mirrors only over axes [0, 2]" in note for note in report.notes)


def test_a_second_import_needs_overwrite_and_replaces_the_folder_whole(tmp_path, nnunet):
    folder = nnunet.write_folder(tmp_path / "results", nnunet.plans_json([16, 16, 16], FEATURES), nnunet.nnunet_keys(_network()))
    import_nnunet(folder, tmp_path / "model")
    with pytest.raises(MedsegError, match="--overwrite"):
        import_nnunet(folder, tmp_path / "model")
    (tmp_path / "model" / "fold_0" / "stale.txt").write_text("from the first import")
    import_nnunet(folder, tmp_path / "model", overwrite=True)
    assert not (tmp_path / "model" / "fold_0" / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "results"]  # no temporaries left


def test_custom_class_in_checkpoint_is_one_line_exit_2(tmp_path, nnunet):
    folder = nnunet.write_folder(tmp_path / "results", nnunet.plans_json([16, 16, 16], FEATURES), nnunet.nnunet_keys(_network()),
                          extra={"trainer_state": CustomTrainerState()})
    result = _cli(folder, "-o", tmp_path / "model")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.output
    assert "checkpoint_final.pth" in lines[0] and "unpickled" in lines[0] and "CustomTrainerState" in lines[0]
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("damage", ["no plans", "no checkpoint", "not a folder", "not a checkpoint"])
def test_not_an_nnunet_folder_is_one_line_exit_2(tmp_path, nnunet, damage):
    folder = nnunet.write_folder(tmp_path / "results", nnunet.plans_json([16, 16, 16], FEATURES), nnunet.nnunet_keys(_network()))
    if damage == "no plans":
        (folder / "plans.json").unlink()
    elif damage == "no checkpoint":
        (folder / "fold_0" / "checkpoint_final.pth").unlink()
    elif damage == "not a folder":
        folder = tmp_path / "missing"
    else:
        (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"not a zip file")
    result = _cli(folder, "-o", tmp_path / "model")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    expected = "not a readable PyTorch checkpoint" if damage == "not a checkpoint" else "nnU-Net"
    assert expected in lines[0]
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("change, dataset, message", [
    ({"network_class_name": "my_trainers.MyFancyUNet"}, None, "unknown network class 'my_trainers.MyFancyUNet'"),
    ({"normalization_schemes": ["MyNormalization"]}, None, "unknown normalization scheme 'MyNormalization'"),
    ({"resampling_fn_data": "my_resampler"}, None, "unknown resampling function 'my_resampler'"),
    ({}, {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "whole": [1, 2], "core": 2},
          "regions_class_order": [1, 2], "file_ending": ".nii.gz"}, "regions"),
])
def test_what_medseg_cannot_represent_is_named(tmp_path, nnunet, change, dataset, message):
    plans = nnunet.plans_json([16, 16, 16], FEATURES)
    configuration = plans["configurations"]["3d_fullres"]
    for key, value in change.items():
        (configuration["architecture"] if key == "network_class_name" else configuration)[key] = value
    folder = nnunet.write_folder(tmp_path / "results", plans, nnunet.nnunet_keys(_network()), dataset=dataset)
    with pytest.raises(MedsegError, match=message):
        import_nnunet(folder, tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_weights_of_another_network_are_refused(tmp_path, nnunet):
    state = nnunet.nnunet_keys(_network())
    state["encoder.stages.0.0.attention.weight"] = torch.zeros(3)  # a custom trainer's extra layer
    folder = nnunet.write_folder(tmp_path / "results", nnunet.plans_json([16, 16, 16], FEATURES), state)
    with pytest.raises(MedsegError, match="custom trainer"):
        import_nnunet(folder, tmp_path / "model")
    wider = PlanUNet(spatial_dims=3, in_channels=1, num_classes=3, features_per_stage=[6, 8], kernel_sizes=[3, 3],
                     strides=[1, 2])
    folder = nnunet.write_folder(tmp_path / "other", nnunet.plans_json([16, 16, 16], FEATURES), nnunet.nnunet_keys(wider))
    with pytest.raises(MedsegError, match="do not fit the network"):
        import_nnunet(folder, tmp_path / "model")


def test_cli_imports_named_folds(tmp_path, nnunet):
    folder = nnunet.write_folder(tmp_path / "results", nnunet.plans_json([16, 16, 16], FEATURES), nnunet.nnunet_keys(_network()),
                          folds=(0, 1, 2))
    for index, folds in enumerate([["--folds", "0", "2"], ["-f", "0", "-f", "2"], ["-f", "0,2"]]):
        result = _cli(folder, "-o", tmp_path / f"model{index}", *folds)
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in (tmp_path / f"model{index}").glob("fold_*")) == ["fold_0", "fold_2"]
        spec = json.loads((tmp_path / f"model{index}" / "model.json").read_text())
        assert spec["extra"]["imported_from"]["folds"] == ["0", "2"]
    result = _cli(folder, tmp_path / "other", "-o", tmp_path / "model")
    assert result.exit_code == 2 and "unexpected argument" in result.stderr
    result = _cli(folder, "-o", tmp_path / "model_f4", "--folds", "4")
    assert result.exit_code == 2 and "fold 4 has no checkpoint_final.pth" in result.stderr
