"""The ``nnunet`` fixture: tiny nnU-Net v2 trained-model folders for the importer tests, in nnU-Net's exact schema (plans.json keys as
nnU-Net 2.x's ExperimentPlanner writes them; checkpoint_final.pth as nnUNetTrainer.save_checkpoint does, with
numpy scalars in its log), built without nnU-Net: the weights are a medseg PlanUNet's, renamed to
dynamic_network_architectures' keys (``nnunet_keys``)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medseg.nets.plan_unet import PlanUNet

DATASET_JSON = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "anterior": 1, "posterior": 2},
                "numTraining": 4, "file_ending": ".nii.gz", "name": "tiny"}


def architecture(dims: int, features: list[int], *, residual: bool = False) -> dict[str, Any]:
    """nnU-Net's ``architecture`` entry of a configuration."""
    n = len(features)
    kw: dict[str, Any] = {
        "n_stages": n, "features_per_stage": features, "conv_op": f"torch.nn.modules.conv.Conv{dims}d",
        "kernel_sizes": [[3] * dims] * n, "strides": [[1] * dims] + [[2] * dims] * (n - 1),
        "n_conv_per_stage_decoder": [1] * (n - 1) if residual else [2] * (n - 1), "conv_bias": True,
        "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    kw["n_blocks_per_stage" if residual else "n_conv_per_stage"] = [1] + [2] * (n - 1) if residual else [2] * n
    name = "ResidualEncoderUNet" if residual else "PlainConvUNet"
    return {"network_class_name": f"dynamic_network_architectures.architectures.unet.{name}", "arch_kwargs": kw,
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}


def plans_json(patch: list[int], features: list[int], *, name: str = "3d_fullres", residual: bool = False,
               scheme: str = "ZScoreNormalization", transpose: list[int] | None = None) -> dict[str, Any]:
    dims = len(patch)
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    configuration = {
        "data_identifier": f"nnUNetPlans_{name}", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
        "patch_size": patch, "median_image_size_in_voxels": [float(p) for p in patch], "spacing": [1.0] * dims,
        "normalization_schemes": [scheme], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": resampling, "resampling_fn_seg_kwargs": {**resampling, "is_seg": True,
                                                                              "order": 1},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
        "architecture": architecture(dims, features, residual=residual), "batch_dice": True}
    transpose = transpose or [0, 1, 2]
    return {"dataset_name": "Dataset999_tiny", "plans_name": "nnUNetPlans",
            "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
            "original_median_shape_after_transp": [16, 16, 16], "image_reader_writer": "SimpleITKIO",
            "transpose_forward": transpose, "transpose_backward": [transpose.index(i) for i in range(3)],
            "configurations": {name: configuration}, "experiment_planner_used": "ExperimentPlanner",
            "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": {"0": {
                "max": 900.0, "mean": 300.0, "median": 310.0, "min": 0.0, "percentile_00_5": 10.0,
                "percentile_99_5": 800.0, "std": 120.0}}}


_TO_NNUNET = [  # medseg PlanUNet key -> dynamic_network_architectures key (plain encoder)
    (re.compile(r"^encoder\.(\d+)\.(\d+)\.(conv|norm)\.(\w+)$"), r"encoder.stages.\1.0.convs.\2.\3.\4"),
    (re.compile(r"^decoder\.(\d+)\.(\d+)\.(conv|norm)\.(\w+)$"), r"decoder.stages.\1.convs.\2.\3.\4"),
    (re.compile(r"^ups\.(\d+)\.conv\.(\w+)$"), r"decoder.transpconvs.\1.\2"),
]


def nnunet_keys(network: PlanUNet) -> dict[str, torch.Tensor]:
    """A plain PlanUNet's state dict under nnU-Net's keys (all deep-supervision heads, as nnU-Net saves them)."""
    state = {}
    for key, value in network.state_dict().items():
        if key.startswith("heads."):
            continue
        for pattern, replacement in _TO_NNUNET:
            if pattern.match(key):
                state[pattern.sub(replacement, key)] = value.clone()
                break
        else:
            raise AssertionError(f"no nnU-Net key for {key}")
    stages = len(network.config["features_per_stage"])
    head = network.heads[-1].conv
    for s in range(stages - 1):
        state[f"decoder.seg_layers.{s}.weight"] = head.weight.clone() if s == stages - 2 else torch.zeros(1)
        state[f"decoder.seg_layers.{s}.bias"] = head.bias.clone() if s == stages - 2 else torch.zeros(1)
    return state


def write_folder(root: Path, plans: dict[str, Any], weights: dict[str, torch.Tensor], *, folds: tuple = (0,),
                 dataset: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                 mirroring: tuple | None = (0, 1, 2)) -> Path:
    """``root/Dataset999_tiny/nnUNetTrainer__nnUNetPlans__CONFIG`` with plans.json, dataset.json and a checkpoint
    per fold."""
    configuration = next(iter(plans["configurations"]))
    folder = root / "Dataset999_tiny" / f"nnUNetTrainer__nnUNetPlans__{configuration}"
    folder.mkdir(parents=True)
    dataset = copy.deepcopy(dataset or DATASET_JSON)
    (folder / "plans.json").write_text(json.dumps(plans, indent=1))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=1))
    for fold in folds:
        (folder / f"fold_{fold}").mkdir()
        checkpoint = {"network_weights": weights, "optimizer_state": {"state": {}, "param_groups": []},
                      "grad_scaler_state": None,
                      "logging": {"mean_fg_dice": [np.float64(0.5)], "ema_fg_dice": [np.float64(0.4)],
                                  "train_losses": [0.9]},
                      "_best_ema": np.float64(0.4), "current_epoch": 3,
                      "init_args": {"plans": plans, "configuration": configuration, "fold": fold,
                                    "dataset_json": dataset, "device": torch.device("cpu")},
                      "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": mirroring,
                      **(extra or {})}
        torch.save(checkpoint, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


@pytest.fixture
def nnunet():
    """The builders of this module: ``plans_json``, ``nnunet_keys``, ``write_folder``, ``DATASET_JSON``."""
    from types import SimpleNamespace

    return SimpleNamespace(plans_json=plans_json, nnunet_keys=nnunet_keys, write_folder=write_folder,
                           DATASET_JSON=DATASET_JSON)
