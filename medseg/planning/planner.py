"""plan(fingerprint, device, budget) -> Plan: nnU-Net's configuration rules, fitted to memory and time.

Every choice is recorded as a ``Decision`` with its reason. The rules that come from nnU-Net v2 (median target
spacing, the anisotropy rule, normalisation by modality, pooling topology, 3d_lowres when the full-resolution
patch covers too little of the image) are kept; what medseg adds is the fit to the user's device and time budget:
the network width and patch shrink until the budget allows ``min_iterations`` training steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from medseg.config import Configuration, Fingerprint, Normalization, Plan
from medseg.planning.topology import Topology, features_per_stage, forward_flops, pooling_topology

ANISOTROPY_THRESHOLD = 3.0
LOWRES_COVERAGE = 0.25  # 3d_lowres when the full-resolution patch covers less than this of the median image
MIN_LOWRES_FACTOR = 1.25  # ... and only when it coarsens the spacing by at least this factor
REFERENCE_VOXELS = {2: 2048**2, 3: 256**3}  # nnU-Net's starting patch volume
MAX_FEATURES = {2: 512, 3: 320}
MIN_PATCH_VOXELS = {2: 64**2, 3: 32**3}
RGB_NAMES = {"r", "g", "b", "red", "green", "blue", "rgb"}
SLICE_CONTEXT = 2  # 2.5d: 2 slices each side, k = 5 slices per image channel


@dataclass
class Budget:
    """What the plan must fit: ``device`` ("cpu"/"cuda"), bytes of memory for activations, seconds of training
    (None = no time limit, nnU-Net's fixed schedule), and the device's measured training FLOP/s (per spatial
    dimensionality when a measured step of a planned network corrected it)."""

    def throughput(self, dims: int) -> float:
        return self.flops_per_second_by_dims.get(dims, self.flops_per_second)

    device: str
    memory_bytes: int
    seconds: float | None
    flops_per_second: float
    min_iterations: int = 1000
    flops_per_second_by_dims: dict[int, float] = field(default_factory=dict)  # measured corrections (2d / 3d)
    base_features: int = 32
    batch_size_floor: int = 2


def plan_dataset(fingerprint: Fingerprint, budget: Budget, *, calibration: dict | None = None,
                 instances: bool = False, raters: int = 0) -> Plan:
    """All configurations for the dataset; 3D datasets get 2d, 2.5d, 3d_fullres and, when needed, 3d_lowres +
    cascade. Which one to use is measured, not guessed: ``medseg find-best`` over their cross-validation.
    ``instances`` (a dataset with ``instancesTr/``, or asked for): also ``instance``, the 2d (2D data) or
    3d_fullres network with a distance-map head. ``raters`` (label maps per case, ``labelsTr/<case>_r<K>``):
    also ``probabilistic``, a probabilistic U-Net on the same topology that learns the raters' spread."""
    is_3d = len(fingerprint.median_spacing) == 3
    num_classes = len([v for v in fingerprint.labels.values() if isinstance(v, int)])
    configurations: dict[str, Configuration] = {}
    configurations["2d"] = _plan_configuration("2d", fingerprint, budget, num_classes)
    if is_3d:
        fullres = _plan_configuration("3d_fullres", fingerprint, budget, num_classes)
        configurations["2.5d"] = _plan_configuration("2.5d", fingerprint, budget, num_classes,
                                                     slice_context=SLICE_CONTEXT)
        configurations["3d_fullres"] = fullres
        coverage = np.prod(fullres.patch_size) / np.prod(fullres.median_shape)
        if coverage < LOWRES_COVERAGE:
            lowres = _plan_lowres(fingerprint, budget, num_classes, fullres)
            if lowres is not None:
                configurations["3d_lowres"] = lowres
                cascade = _plan_configuration("3d_fullres", fingerprint, budget, num_classes,
                                              extra_channels=num_classes - 1)
                cascade.name, cascade.previous_stage = "3d_cascade_fullres", "3d_lowres"
                cascade.decide("previous_stage", "3d_lowres", "cascade: full resolution refines the low-resolution "
                               f"prediction, which joins the input as one-hot channels ({num_classes - 1} "
                               "foreground labels)")
                configurations["3d_cascade_fullres"] = cascade
        else:
            fullres.decide("3d_lowres", None, f"not planned: the patch covers {coverage:.0%} of the median image "
                           f"(>= {LOWRES_COVERAGE:.0%})")
    if instances:
        instance = _plan_configuration("3d_fullres" if is_3d else "2d", fingerprint, budget, num_classes + 1)
        instance.name, instance.instances = "instance", True
        instance.decide("instances", True, "instance labels: the network also regresses each object's distance to "
                        "its border (1 at its centre); a marker watershed of that map inside the predicted "
                        "foreground separates touching objects")
        configurations["instance"] = instance
    if raters:
        probabilistic = _plan_configuration("3d_fullres" if is_3d else "2d", fingerprint, budget, num_classes)
        probabilistic.name, probabilistic.raters = "probabilistic", int(raters)
        probabilistic.network_name = "prob_unet"
        probabilistic.decide("raters", int(raters), f"{raters} raters per case: a probabilistic U-Net (prior and "
                             "posterior latent nets on the planned topology) learns the spread between them; each "
                             "patch trains on one rater drawn at random")
        configurations["probabilistic"] = probabilistic
    return Plan(
        dataset_name=fingerprint.dataset_name, channel_names=list(fingerprint.channel_names),
        labels=dict(fingerprint.labels), device=budget.device, budget_seconds=budget.seconds,
        memory_bytes=budget.memory_bytes, calibration=dict(calibration or {"flops_per_second": budget.flops_per_second}),
        configurations=configurations,
    )


def target_spacing(fingerprint: Fingerprint) -> tuple[list[float], str]:
    """Median spacing; for anisotropic data the coarse axis takes its 10th percentile (nnU-Net's rule)."""
    spacing = np.array(fingerprint.median_spacing, dtype=float)
    if len(spacing) < 3:
        return spacing.tolist(), "median spacing of the training cases"
    shape = np.array(fingerprint.median_shape_after_crop, dtype=float)
    worst = int(np.argmax(spacing))
    others = [d for d in range(len(spacing)) if d != worst]
    aniso_spacing = spacing[worst] > ANISOTROPY_THRESHOLD * max(spacing[others])
    aniso_voxels = shape[worst] * ANISOTROPY_THRESHOLD < min(shape[others])
    if aniso_spacing and aniso_voxels:
        coarse = max(float(fingerprint.spacing_percentile_10[worst]), float(max(spacing[others])) + 1e-5)
        spacing[worst] = coarse
        return spacing.tolist(), (f"median spacing, but axis {worst} is anisotropic (spacing > {ANISOTROPY_THRESHOLD}x "
                                  f"the others and few slices): its 10th percentile {coarse:.3g} mm avoids "
                                  "interpolating too many slices")
    return spacing.tolist(), "median spacing of the training cases"


def normalization(fingerprint: Fingerprint) -> tuple[list[Normalization], str]:
    names = [n.lower() for n in fingerprint.channel_names]
    if len(names) in (3, 4) and set(names[:3]) <= RGB_NAMES:
        return [Normalization("rgb") for _ in names], "RGB channels: scale 0..255 to 0..1"
    use_mask = fingerprint.median_relative_size_after_crop < 0.75
    result = []
    for index, name in enumerate(names):
        if name == "ct":
            stats = fingerprint.intensity[str(index)]
            result.append(Normalization("ct", clip=[stats.percentile_00_5, stats.percentile_99_5], mean=stats.mean,
                                        std=stats.std))
        else:
            result.append(Normalization("zscore", use_mask=use_mask))
    reason = ("CT: clip to the foreground 0.5/99.5 percentiles, z-score with the foreground mean/std; "
              f"other channels: per-image z-score{' inside the content mask (cropping removed over 25%)' if use_mask else ''}")
    return result, reason


def _plan_configuration(name: str, fingerprint: Fingerprint, budget: Budget, num_classes: int,
                        spacing_override: list[float] | None = None, extra_channels: int = 0,
                        slice_context: int = 0) -> Configuration:
    spacing_full, spacing_reason = target_spacing(fingerprint)
    if spacing_override is not None:
        spacing_full, spacing_reason = spacing_override, "coarser spacing so the patch covers more of the image"
    dims = 2 if name in ("2d", "2.5d") else 3
    spacing = spacing_full[-2:] if dims == 2 else spacing_full
    median_shape = _median_shape_at(fingerprint, spacing_full)[-dims:]
    slices = 1 + 2 * slice_context  # 2.5d: each image channel's neighbouring slices are channels too
    in_channels = len(fingerprint.channel_names) * slices + extra_channels  # a cascade: + the first stage's one-hot
    norm, norm_reason = normalization(fingerprint)

    patch = _initial_patch(spacing, median_shape)
    base = budget.base_features
    topology = pooling_topology(spacing, patch)
    batch = budget.batch_size_floor
    notes = []
    # 1) memory: shrink the patch along the axis that is largest relative to the image (nnU-Net's rule)
    while _activation_memory(topology, base, in_channels, num_classes, batch, dims) > budget.memory_bytes:
        if not _shrink(patch, median_shape, topology, dims):
            notes.append("patch at its minimum; memory estimate still above the budget")
            break
        topology = pooling_topology(spacing, patch)
    memory_fit_patch = list(topology.patch_size)
    # 2) time: fewer features, then a smaller patch, until the budget allows min_iterations steps
    step_seconds = _step_seconds(topology, base, in_channels, num_classes, batch, budget)
    if budget.seconds is not None:
        while budget.seconds / step_seconds < budget.min_iterations:
            if base > 16:
                base = 16
                notes.append("base features 32 -> 16 to fit the time budget")
            elif _shrink(patch, median_shape, topology, dims):
                topology = pooling_topology(spacing, patch)
            elif base > 8:
                base = 8
                notes.append("base features 16 -> 8 to fit the time budget")
            else:
                notes.append("smallest network and patch reached; the budget allows fewer steps than wanted")
                break
            step_seconds = _step_seconds(topology, base, in_channels, num_classes, batch, budget)
    # 3) batch: fill the memory on a GPU (at most 5% of the dataset's voxels per batch); 2 on a CPU
    if budget.device == "cuda":
        per_sample = _activation_memory(topology, base, in_channels, num_classes, 1, dims)
        cap = max(batch, int(0.05 * fingerprint.num_cases * np.prod(median_shape) / np.prod(topology.patch_size)))
        batch = int(max(batch, min(budget.memory_bytes // max(per_sample, 1), cap)))
        step_seconds = _step_seconds(topology, base, in_channels, num_classes, batch, budget)
    features = features_per_stage(topology.num_stages, base, MAX_FEATURES[dims])
    network = dict(spatial_dims=dims, in_channels=in_channels, num_classes=num_classes,
                   features_per_stage=features, kernel_sizes=topology.kernel_sizes, strides=topology.strides,
                   n_conv_per_stage=2, n_conv_per_stage_decoder=2, encoder="plain", deep_supervision=True)
    iterations = _iterations(budget, step_seconds)
    anisotropic = max(spacing_full) / min(spacing_full) > ANISOTROPY_THRESHOLD
    config = Configuration(
        name=name, spatial_dims=dims, target_spacing=[float(s) for s in spacing_full] if dims == 3 else
        [float(s) for s in spacing], median_shape=[int(s) for s in median_shape], normalization=norm,
        resampling={"image_order": 3, "label": "one_hot_linear", "separate_z": bool(anisotropic),
                    "z_order": 0},
        patch_size=[int(p) for p in topology.patch_size], batch_size=int(batch), network=network,
        estimated_memory_bytes=int(_activation_memory(topology, base, in_channels, num_classes, batch, dims)),
        estimated_step_seconds=float(step_seconds), num_iterations=iterations, slice_context=int(slice_context),
    )
    config.decide("target_spacing", config.target_spacing, spacing_reason if dims == 3 else
                  "in-plane median spacing (slices are segmented one at a time)")
    if slice_context:
        spread = slice_context * float(spacing_full[0])
        config.decide("slice_context", slice_context,
                      f"2.5D: {slices} slices (+-{spread:.3g} mm through-plane) of each image channel as input "
                      "channels of a 2D network that predicts the centre one; through-plane context at 2D cost, "
                      "most useful where slices are thick (anisotropic data); find-best measures it against 2d "
                      "and 3d_fullres")
    config.decide("normalization", [n.scheme for n in norm], norm_reason)
    config.decide("resampling", config.resampling, "images third-order spline, labels one-hot linear; "
                  + ("anisotropic: in-plane and through-plane separately, through-plane nearest" if anisotropic
                     else "isotropic enough to resample jointly"))
    config.decide("patch_size", config.patch_size,
                  f"start at {REFERENCE_VOXELS[dims]} voxels shaped by the spacing, clipped to the median image "
                  f"{config.median_shape}; memory fit gave {memory_fit_patch}"
                  + (f"; {'; '.join(notes)}" if notes else ""))
    config.decide("network", {"stages": topology.num_stages, "features": features, "strides": topology.strides},
                  "pool while feature maps stay >= 8 voxels, anisotropic axes wait until spacings are within 2x; "
                  f"base features {base}")
    config.decide("batch_size", batch, "fill the GPU memory (capped at 5% of the dataset's voxels)"
                  if budget.device == "cuda" else "2 on a CPU: a larger batch costs time in proportion")
    config.decide("num_iterations", iterations,
                  f"budget {budget.seconds:.0f} s / {step_seconds:.3g} s per step (from calibration)"
                  if budget.seconds is not None else "no time budget: nnU-Net's 1000 epochs x 250 steps")
    return config


def _plan_lowres(fingerprint: Fingerprint, budget: Budget, num_classes: int,
                 fullres: Configuration) -> Configuration | None:
    """Coarsen the spacing in 3% steps until the full-resolution patch would cover LOWRES_COVERAGE."""
    spacing = np.array(fullres.target_spacing, dtype=float)
    base_shape = np.array(_median_shape_at(fingerprint, spacing.tolist()), dtype=float)
    factor = 1.0
    while np.prod(fullres.patch_size) / np.prod(np.maximum(base_shape / factor, 1)) < LOWRES_COVERAGE:
        factor *= 1.03
        if factor > 8:
            break
    if factor < MIN_LOWRES_FACTOR:
        fullres.decide("3d_lowres", None, f"not planned: covering {LOWRES_COVERAGE:.0%} of the image needs only "
                       f"{factor:.2f}x coarser spacing (< {MIN_LOWRES_FACTOR}x), too close to 3d_fullres to add anything")
        return None
    config = _plan_configuration("3d_lowres", fingerprint, budget, num_classes,
                                 spacing_override=(spacing * factor).tolist())
    config.decide("3d_lowres", round(factor, 3), "the full-resolution patch covered under 25% of the median image: "
                  "spacing coarsened by this factor so a patch sees enough context")
    return config


def _median_shape_at(fingerprint: Fingerprint, spacing: list[float]) -> list[int]:
    shapes = np.array([c.shape_after_crop for c in fingerprint.cases], dtype=float)
    spacings = np.array([c.spacing for c in fingerprint.cases], dtype=float)
    resampled = shapes * spacings / np.array(spacing)
    return [int(round(v)) for v in np.median(resampled, axis=0)]


def _initial_patch(spacing: list[float], median_shape: list[int]) -> list[int]:
    dims = len(spacing)
    inverse = 1.0 / np.array(spacing, dtype=float)
    patch = inverse * (REFERENCE_VOXELS[dims] / np.prod(inverse)) ** (1 / dims)
    return [int(round(min(p, s))) for p, s in zip(patch, median_shape)]


def _shrink(patch: list[int], median_shape: list[int], topology: Topology, dims: int) -> bool:
    """Reduce the axis that is largest relative to the median image by one stride multiple (in place)."""
    if np.prod(patch) <= MIN_PATCH_VOXELS[dims]:
        return False
    order = np.argsort([p / s for p, s in zip(topology.patch_size, median_shape)])[::-1]
    for axis in order:
        step = topology.divisor[axis]
        new = topology.patch_size[axis] - step
        if new >= max(step, 8):
            patch[:] = list(topology.patch_size)
            patch[axis] = new
            return True
    return False


def _activation_memory(topology: Topology, base: int, in_channels: int, num_classes: int, batch: int,
                       dims: int) -> int:
    import torch

    from medseg.nets.plan_unet import PlanUNet

    features = features_per_stage(topology.num_stages, base, MAX_FEATURES[dims])
    with torch.device("meta"):
        net = PlanUNet(spatial_dims=dims, in_channels=in_channels, num_classes=num_classes,
                       features_per_stage=features, kernel_sizes=topology.kernel_sizes, strides=topology.strides,
                       deep_supervision=True)
    return net.estimate_activation_memory(topology.patch_size, batch)


def _step_seconds(topology: Topology, base: int, in_channels: int, num_classes: int, batch: int,
                  budget: Budget) -> float:
    dims = len(topology.patch_size)
    features = features_per_stage(topology.num_stages, base, MAX_FEATURES[dims])
    return 3 * batch * forward_flops(topology, features, in_channels, num_classes) / budget.throughput(dims)


def _iterations(budget: Budget, step_seconds: float) -> int:
    if budget.seconds is None:
        return 250_000
    return int(max(1, math.floor(budget.seconds / step_seconds)))
