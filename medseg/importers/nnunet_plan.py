"""nnU-Net v2 ``plans.json`` + ``dataset.json`` -> medseg ``Configuration``, network arguments and labels.

Frames: nnU-Net's configuration lists (spacing, patch size, kernel sizes, strides) are in its *transposed* axis
order (``transpose_forward`` applied to the image's array axes); medseg has no transpose, so every per-axis list is
brought back to the image's own array order ``(z, y, x)`` here and the weights are permuted to match
(:mod:`medseg.importers.nnunet_weights`). A network is equivariant to a permutation of its axes once its kernels
are permuted the same way, so this is exact.

What medseg cannot reproduce exactly is recorded in ``Approximations`` (returned as notes by the importer):
nnU-Net decides "separate z" resampling per case from each case's spacing, medseg once per configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.config import Configuration, Normalization
from medseg.errors import MedsegError

NETWORKS = {  # nnU-Net's network_class_name -> (medseg registry name, encoder)
    "dynamic_network_architectures.architectures.unet.PlainConvUNet": ("plan_unet", "plain"),
    "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet": ("plan_resenc_unet", "residual"),
}
NORMS = {"InstanceNorm": "instance", "BatchNorm": "batch"}
NONLINS = {"torch.nn.LeakyReLU": "leakyrelu", "torch.nn.modules.activation.LeakyReLU": "leakyrelu",
           "torch.nn.ReLU": "relu", "torch.nn.modules.activation.ReLU": "relu"}
NORMALIZATIONS = ("ZScoreNormalization", "CTNormalization", "NoNormalization", "RescaleTo01Normalization",
                  "RGBTo01Normalization")
RESAMPLING = ("resample_data_or_seg_to_shape",)
ANISOTROPY_THRESHOLD = 3  # nnU-Net's ANISO_THRESHOLD: spacing ratio above which z is resampled separately
_HANDLED_ARCH_KWARGS = {"n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "n_conv_per_stage",
                        "n_blocks_per_stage", "n_conv_per_stage_decoder", "conv_bias", "norm_op", "norm_op_kwargs",
                        "dropout_op", "dropout_op_kwargs", "nonlin", "nonlin_kwargs", "deep_supervision"}
_DEFAULT_ARCH_KWARGS = {"nonlin_first": False, "block": None, "bottleneck_channels": None, "stem_channels": None}


@dataclass
class ImportedConfiguration:
    """One nnU-Net configuration in medseg's terms. ``transpose_forward``: nnU-Net's axis order of the
    network's spatial axes (image array axes), ``[0, 1]`` / ``[0, 1, 2]`` when it does not transpose."""

    configuration: Configuration
    network_name: str
    transpose_forward: list[int]
    notes: list[str] = field(default_factory=list)


def resolved_configuration(plans: dict[str, Any], name: str, plans_path: Path) -> dict[str, Any]:
    """Configuration ``name`` of nnU-Net ``plans`` with ``inherits_from`` resolved (the child's keys win)."""
    configurations = plans.get("configurations") or {}
    if name not in configurations:
        raise MedsegError(f"plans.json has no configuration {name!r}", path=plans_path,
                          fix=f"use one of {', '.join(configurations) or '(none)'}")
    raw = dict(configurations[name])
    seen = {name}
    while "inherits_from" in raw:
        parent = raw.pop("inherits_from")
        if parent in seen or parent not in configurations:
            raise MedsegError(f"configuration {name!r} inherits from {parent!r}, which is missing or a cycle",
                              path=plans_path, fix="pass the plans.json nnU-Net trained with")
        seen.add(parent)
        raw = {**configurations[parent], **raw}
    return raw


def label_values(dataset: dict[str, Any], dataset_path: Path) -> list[int]:
    """The network's output channel -> label value (nnU-Net: the sorted label values, 'ignore' excluded); regions
    (a label that is a list of values, ``regions_class_order``) are a MedsegError: medseg's segmentation models
    predict one label per voxel with a softmax, not overlapping regions with sigmoids."""
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise MedsegError("dataset.json has no labels", path=dataset_path, fix="pass the nnU-Net model folder whole")
    if "regions_class_order" in dataset or any(isinstance(v, (list, tuple)) for v in labels.values()):
        raise MedsegError("the model predicts nnU-Net regions (regions_class_order; sigmoid outputs per region), "
                          "which medseg's segmentation models cannot represent", path=dataset_path,
                          fix="import a model trained on plain labels, or retrain with medseg train")
    values = sorted(int(v) for name, v in labels.items() if name != "ignore")
    if values != list(range(len(values))):
        raise MedsegError(f"label values {values} are not 0..{len(values) - 1}", path=dataset_path,
                          fix="nnU-Net requires consecutive labels; pass the dataset.json it trained with")
    return values


def _class_name(value: Any) -> str:
    return value if isinstance(value, str) else ""


def network_arguments(raw: dict[str, Any], in_channels: int, num_classes: int, transpose: list[int],
                      plans_path: Path) -> tuple[str, dict[str, Any]]:
    """nnU-Net's ``architecture`` -> (medseg registry name, ``PlanUNet`` arguments in image axis order)."""
    architecture = raw.get("architecture")
    if not isinstance(architecture, dict) or "network_class_name" not in architecture:
        raise MedsegError("the configuration has no architecture (plans from nnU-Net before v2.3?)",
                          path=plans_path, fix="retrain with nnU-Net >= 2.3, or with medseg train")
    class_name = architecture["network_class_name"]
    if class_name not in NETWORKS:
        raise MedsegError(f"unknown network class {class_name!r} (a custom trainer's network?)", path=plans_path,
                          fix=f"medseg imports {', '.join(n.rsplit('.', 1)[-1] for n in NETWORKS)}")
    name, encoder = NETWORKS[class_name]
    kw = dict(architecture.get("arch_kwargs") or {})
    unsupported = {k: v for k, v in kw.items()
                   if k not in _HANDLED_ARCH_KWARGS and _DEFAULT_ARCH_KWARGS.get(k, object()) != v}
    if unsupported:
        raise MedsegError(f"{class_name.rsplit('.', 1)[-1]} options medseg's network does not have: "
                          f"{', '.join(f'{k}={v!r}' for k, v in unsupported.items())}", path=plans_path,
                          fix="import a network with nnU-Net's default options")
    conv = _class_name(kw.get("conv_op"))
    dims = 3 if conv.endswith("Conv3d") else 2 if conv.endswith("Conv2d") else 0
    if not dims:
        raise MedsegError(f"unknown conv_op {kw.get('conv_op')!r}", path=plans_path, fix="Conv2d or Conv3d only")
    norm_class = _class_name(kw.get("norm_op")).rsplit(".", 1)[-1]
    norm_name = next((medseg for prefix, medseg in NORMS.items() if norm_class.startswith(prefix)), None)
    if kw.get("norm_op") is not None and norm_name is None:
        raise MedsegError(f"unknown norm_op {kw.get('norm_op')!r}", path=plans_path,
                          fix="InstanceNorm or BatchNorm only")
    norm = (norm_name, dict(kw.get("norm_op_kwargs") or {})) if norm_name else None
    nonlin = kw.get("nonlin")
    if nonlin is not None and nonlin not in NONLINS:
        raise MedsegError(f"unknown nonlin {nonlin!r}", path=plans_path, fix="LeakyReLU or ReLU only")
    act_options = dict(kw.get("nonlin_kwargs") or {})
    if nonlin is not None and NONLINS[nonlin] == "leakyrelu":
        act_options.setdefault("negative_slope", 0.01)
    act = (NONLINS[nonlin], act_options) if nonlin is not None else None
    dropout = (kw.get("dropout_op_kwargs") or {}).get("p") if kw.get("dropout_op") else None
    stages = int(kw["n_stages"])
    per_axis = [to_image_order(_per_stage(kw[key], stages, dims), transpose) for key in ("kernel_sizes", "strides")]
    blocks = kw.get("n_blocks_per_stage") if encoder == "residual" else kw.get("n_conv_per_stage")
    features = kw["features_per_stage"]
    arguments = {
        "spatial_dims": dims, "in_channels": in_channels, "num_classes": num_classes,
        "features_per_stage": [int(f) for f in (features if isinstance(features, list) else [features] * stages)],
        "kernel_sizes": per_axis[0], "strides": per_axis[1],
        "n_conv_per_stage": _ints(blocks, stages), "n_conv_per_stage_decoder": _ints(kw["n_conv_per_stage_decoder"],
                                                                                        stages - 1),
        "encoder": encoder, "norm": norm, "act": act, "dropout": dropout,
        "conv_bias": bool(kw.get("conv_bias", False)), "deep_supervision": False,
    }
    if encoder == "residual":
        arguments["residual_skip"] = "pool"  # BasicBlockD: average pooling, then a 1x1 conv where the width changes
    return name, arguments


def _ints(value: Any, n: int) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)] * n


def _per_stage(value: Any, stages: int, dims: int) -> list[list[int]]:
    entries = value if isinstance(value, (list, tuple)) else [value] * stages
    return [[int(v) for v in e] if isinstance(e, (list, tuple)) else [int(e)] * dims for e in entries]


def to_image_order(per_stage: list[list[int]], transpose: list[int]) -> list[list[int]]:
    """Per-axis lists in nnU-Net's transposed order -> the image's array order."""
    backward = sorted(range(len(transpose)), key=lambda i: transpose[i])
    return [[entry[backward[j]] for j in range(len(transpose))] for entry in per_stage]


def network_transpose(plans: dict[str, Any], dims: int, plans_path: Path) -> list[int]:
    """nnU-Net's ``transpose_forward`` for the network's ``dims`` spatial axes. A 2d configuration works on slices
    of the first transposed axis; medseg's 2d models slice the image's first axis, so that axis must stay first."""
    transpose = [int(t) for t in plans.get("transpose_forward", list(range(3)))]
    if sorted(transpose) != list(range(len(transpose))):
        raise MedsegError(f"transpose_forward {transpose} is not a permutation", path=plans_path,
                          fix="pass the plans.json nnU-Net trained with")
    if dims == len(transpose):
        return transpose
    if dims == 2 and len(transpose) == 3:
        if transpose[0] != 0:
            raise MedsegError(f"a 2d configuration with transpose_forward {transpose}: nnU-Net slices the image "
                              f"along its axis {transpose[0]}, medseg's 2d models along axis 0", path=plans_path,
                              fix="import the 3d_fullres configuration, or retrain with medseg train")
        return [t - 1 for t in transpose[1:]]
    raise MedsegError(f"transpose_forward {transpose} does not fit a {dims}D network", path=plans_path,
                      fix="pass the plans.json nnU-Net trained with")


def normalizations(raw: dict[str, Any], plans: dict[str, Any], channels: int, plans_path: Path
                   ) -> list[Normalization]:
    """nnU-Net's ``normalization_schemes`` (+ ``use_mask_for_norm``, CT foreground statistics) per channel."""
    schemes = list(raw.get("normalization_schemes") or [])
    masks = list(raw.get("use_mask_for_norm") or [False] * len(schemes))
    if len(schemes) != channels:
        raise MedsegError(f"{len(schemes)} normalization schemes for {channels} channels", path=plans_path,
                          fix="pass the plans.json and dataset.json of one model")
    stats = plans.get("foreground_intensity_properties_per_channel") or {}
    out = []
    for c, scheme in enumerate(schemes):
        if scheme == "ZScoreNormalization":
            out.append(Normalization("zscore", use_mask=bool(masks[c])))
        elif scheme == "CTNormalization":
            props = stats.get(str(c))
            if not props:
                raise MedsegError(f"CTNormalization of channel {c} without foreground_intensity_properties_per_"
                                  "channel", path=plans_path, fix="pass the plans.json nnU-Net trained with")
            out.append(Normalization("ct", clip=[float(props["percentile_00_5"]), float(props["percentile_99_5"])],
                                     mean=float(props["mean"]), std=float(props["std"])))
        elif scheme == "NoNormalization":
            out.append(Normalization("none"))
        elif scheme == "RescaleTo01Normalization":
            out.append(Normalization("rescale01"))
        elif scheme == "RGBTo01Normalization":
            out.append(Normalization("rgb"))
        else:
            raise MedsegError(f"unknown normalization scheme {scheme!r} of channel {c}", path=plans_path,
                              fix=f"medseg maps {', '.join(NORMALIZATIONS)}")
    return out


def resampling(raw: dict[str, Any], spacing: list[float], plans_path: Path, notes: list[str]) -> dict[str, Any]:
    """nnU-Net's ``resampling_fn_data`` (+ kwargs) -> medseg's resampling options (``spacing`` in image order)."""
    function = raw.get("resampling_fn_data")
    if function not in RESAMPLING:
        raise MedsegError(f"unknown resampling function {function!r}", path=plans_path,
                          fix=f"medseg maps {', '.join(RESAMPLING)}")
    kwargs = raw.get("resampling_fn_data_kwargs") or {}
    force = kwargs.get("force_separate_z")
    anisotropic = len(spacing) == 3 and max(spacing) / min(spacing) > ANISOTROPY_THRESHOLD
    if force is None:
        separate = anisotropic and spacing.index(max(spacing)) == 0
        if anisotropic:
            notes.append(f"nnU-Net chooses separate-z resampling per case from each case's spacing; medseg "
                         f"resamples {'with' if separate else 'without'} separate z for every case (target "
                         f"spacing {spacing}, the lowest-resolution axis {spacing.index(max(spacing))})")
    else:
        separate = bool(force)
    return {"image_order": int(kwargs.get("order", 3)), "z_order": int(kwargs.get("order_z", 0)),
            "label": "one_hot_linear", "separate_z": separate}


def import_configuration(plans: dict[str, Any], dataset: dict[str, Any], name: str, plans_path: Path,
                         dataset_path: Path) -> ImportedConfiguration:
    """Configuration ``name`` of an nnU-Net model as a medseg ``Configuration`` (network arguments included)."""
    raw = resolved_configuration(plans, name, plans_path)
    if raw.get("previous_stage") or "cascade" in name:
        raise MedsegError(f"configuration {name!r} is a cascade stage (its input includes the previous stage's "
                          "prediction)", path=plans_path, fix="import the 3d_fullres, 3d_lowres or 2d model")
    channels = len(dataset.get("channel_names") or dataset.get("modality") or {})
    if channels < 1:
        raise MedsegError("dataset.json has no channel_names", path=dataset_path,
                          fix="pass the nnU-Net model folder whole")
    values = label_values(dataset, dataset_path)
    patch = [int(p) for p in raw["patch_size"]]
    dims = len(patch)
    transpose = network_transpose(plans, dims, plans_path)
    network_name, arguments = network_arguments(raw, channels, len(values), transpose, plans_path)
    if arguments["spatial_dims"] != dims:
        raise MedsegError(f"a {arguments['spatial_dims']}D network with a {dims}D patch", path=plans_path,
                          fix="pass the plans.json nnU-Net trained with")
    [spacing, patch_size, median] = to_image_order(
        [[float(s) for s in raw["spacing"]], patch, [float(m) for m in raw.get("median_image_size_in_voxels", patch)]],
        transpose)
    notes: list[str] = []
    config = Configuration(
        name=name, spatial_dims=dims, target_spacing=spacing, median_shape=[max(1, round(m)) for m in median],
        normalization=normalizations(raw, plans, channels, plans_path),
        resampling=resampling(raw, spacing, plans_path, notes), patch_size=[int(p) for p in patch_size],
        batch_size=int(raw.get("batch_size", 1)), network=arguments, estimated_memory_bytes=0,
        estimated_step_seconds=0.0, num_iterations=1, network_name=network_name)
    config.decide("network", network_name, f"imported from nnU-Net {plans.get('plans_name', 'plans')} "
                  f"{name}: {_short_class_name(raw)}")
    if transpose != sorted(transpose):
        config.decide("axes", transpose, "nnU-Net transposed the axes (transpose_forward); spacing, patch, kernels, "
                      "strides and weights are given here in the image's own axis order")
    return ImportedConfiguration(config, network_name, transpose, notes)


def _short_class_name(raw: dict[str, Any]) -> str:
    return str(raw["architecture"]["network_class_name"]).rsplit(".", 1)[-1]
