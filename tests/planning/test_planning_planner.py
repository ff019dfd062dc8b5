"""Planning rules: topology as nnU-Net computes it, FLOPs against torch's counter, spacing/normalisation rules,
memory and time budgets, 3d_lowres, overrides."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from medseg.config import CaseFingerprint, Fingerprint, IntensityStats, Plan
from medseg.errors import MedsegError
from medseg.planning.budget import parse_duration, parse_memory
from medseg.planning.overrides import apply_overrides
from medseg.planning.planner import Budget, normalization, plan_dataset, target_spacing
from medseg.planning.topology import features_per_stage, forward_flops, pooling_topology

# (spacing, patch) -> (strides, kernels, padded patch), as nnunetv2 2.8.1's get_pool_and_conv_props returns them
NNUNET_TOPOLOGIES = [
    ([1, 1, 1], [128, 128, 128], [[1, 1, 1]] + [[2, 2, 2]] * 5, [[3, 3, 3]] * 6, [128, 128, 128]),
    ([3.0, 0.8, 0.8], [40, 192, 160], [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
     [[1, 3, 3]] + [[3, 3, 3]] * 5, [40, 192, 160]),
    ([1.0, 1.0], [512, 512], [[1, 1]] + [[2, 2]] * 7, [[3, 3]] * 8, [512, 512]),
    ([5.0, 0.7, 0.7], [20, 320, 256],
     [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2]],
     [[1, 3, 3], [1, 3, 3]] + [[3, 3, 3]] * 5, [20, 320, 256]),
]


@pytest.mark.parametrize("spacing, patch, strides, kernels, padded", NNUNET_TOPOLOGIES)
def test_pooling_topology_matches_nnunet(spacing, patch, strides, kernels, padded) -> None:
    topology = pooling_topology(spacing, patch, max_stages=99)
    assert topology.strides == strides
    assert topology.kernel_sizes == kernels
    assert topology.patch_size == padded


def test_patch_is_padded_to_the_downsampling() -> None:
    topology = pooling_topology([1.0, 1.0], [100, 70])
    assert all(p % d == 0 for p, d in zip(topology.patch_size, topology.divisor))
    assert topology.patch_size[0] >= 100 and topology.patch_size[1] >= 70


@pytest.mark.parametrize("spacing, patch", [([1.0, 1.0], [64, 96]), ([3.0, 1.0, 1.0], [16, 48, 32])])
def test_forward_flops_agree_with_torch_flop_counter(spacing, patch) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from medseg.nets.plan_unet import PlanUNet

    topology = pooling_topology(spacing, patch)
    features = features_per_stage(topology.num_stages, 8, 64)
    net = PlanUNet(spatial_dims=len(spacing), in_channels=2, num_classes=3, features_per_stage=features,
                   kernel_sizes=topology.kernel_sizes, strides=topology.strides)
    with FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 2, *topology.patch_size))
    assert forward_flops(topology, features, 2, 3) == pytest.approx(counter.get_total_flops(), rel=0.02)


def _fingerprint(spacings, shapes, channel_names=("MR",), labels=None, relative_size=1.0) -> Fingerprint:
    spacings, shapes = np.array(spacings, float), np.array(shapes, float)
    stats = IntensityStats(mean=50.0, std=10.0, min=-1000.0, max=2000.0, median=40.0, percentile_00_5=-900.0,
                           percentile_99_5=1500.0, num_samples=1000)
    cases = [CaseFingerprint(f"c{i}", sp.tolist(), sh.astype(int).tolist(), sh.astype(int).tolist(),
                             [[0, int(s)] for s in sh], relative_size, {"0": 1, "1": 1})
             for i, (sp, sh) in enumerate(zip(spacings, shapes))]
    return Fingerprint(
        dataset_name="synthetic", channel_names=list(channel_names),
        labels=labels or {"background": 0, "organ": 1}, num_cases=len(cases), cases=cases,
        median_spacing=np.median(spacings, 0).tolist(), spacing_percentile_10=np.percentile(spacings, 10, 0).tolist(),
        spacing_percentile_90=np.percentile(spacings, 90, 0).tolist(),
        median_shape_after_crop=np.median(shapes, 0).tolist(), median_relative_size_after_crop=relative_size,
        anisotropy=float(np.median(spacings, 0).max() / np.median(spacings, 0).min()),
        intensity={str(c): stats for c in range(len(channel_names))}, class_voxel_fraction={"0": 0.9, "1": 0.1},
        cases_with_class={"0": len(cases), "1": len(cases)}, samples_per_case=1000, seed=0)


def test_anisotropic_axis_takes_its_10th_percentile() -> None:
    fingerprint = _fingerprint([[5.0, 0.8, 0.8], [4.0, 0.8, 0.8], [6.0, 0.7, 0.7], [2.5, 0.8, 0.8]],
                               [[40, 512, 512]] * 4)
    spacing, reason = target_spacing(fingerprint)
    assert spacing[0] == pytest.approx(np.percentile([5.0, 4.0, 6.0, 2.5], 10))
    assert spacing[1:] == [0.8, 0.8] and "anisotropic" in reason


def test_isotropic_data_takes_the_median_spacing() -> None:
    fingerprint = _fingerprint([[1.0, 1.0, 1.0], [1.2, 1.0, 1.0], [0.9, 1.1, 1.1]], [[100, 100, 100]] * 3)
    assert target_spacing(fingerprint)[0] == [1.0, 1.0, 1.0]


def test_normalization_by_modality() -> None:
    ct = normalization(_fingerprint([[1, 1, 1]], [[10, 10, 10]], channel_names=("CT",)))[0][0]
    assert ct.scheme == "ct" and ct.clip == [-900.0, 1500.0] and (ct.mean, ct.std) == (50.0, 10.0)
    rgb = normalization(_fingerprint([[1, 1]], [[10, 10]], channel_names=("R", "G", "B")))[0]
    assert [n.scheme for n in rgb] == ["rgb"] * 3
    mr = normalization(_fingerprint([[1, 1, 1]], [[10, 10, 10]], relative_size=0.5))[0][0]
    assert mr.scheme == "zscore" and mr.use_mask
    assert not normalization(_fingerprint([[1, 1, 1]], [[10, 10, 10]]))[0][0].use_mask


BRAIN = _fingerprint([[1.0, 1.0, 1.0]] * 4, [[155, 240, 240]] * 4, channel_names=("FLAIR", "T1c"),
                     labels={"background": 0, "a": 1, "b": 2, "c": 3, "d": 4})


def test_memory_budget_is_respected_and_bigger_budgets_give_bigger_patches() -> None:
    small = plan_dataset(BRAIN, Budget("cpu", 1 * 10**9, None, 1e10)).configurations["3d_fullres"]
    large = plan_dataset(BRAIN, Budget("cpu", 8 * 10**9, None, 1e10)).configurations["3d_fullres"]
    assert small.estimated_memory_bytes <= 1 * 10**9 < large.estimated_memory_bytes <= 8 * 10**9
    assert np.prod(small.patch_size) < np.prod(large.patch_size)
    for config in (small, large):
        divisor = np.prod(np.array(config.network["strides"]), axis=0)
        assert np.all(np.array(config.patch_size) % divisor == 0)
        assert config.network["num_classes"] == 5 and config.network["in_channels"] == 2


def test_time_budget_shrinks_the_network_until_min_iterations_fit() -> None:
    budget = Budget("cpu", 8 * 10**9, 600.0, 5e9, min_iterations=500)
    config = plan_dataset(BRAIN, budget).configurations["3d_fullres"]
    assert config.num_iterations >= 500
    assert config.num_iterations == int(600.0 // config.estimated_step_seconds)
    unlimited = plan_dataset(BRAIN, Budget("cpu", 8 * 10**9, None, 5e9)).configurations["3d_fullres"]
    assert config.network["features_per_stage"][0] < unlimited.network["features_per_stage"][0]
    longer = plan_dataset(BRAIN, Budget("cpu", 8 * 10**9, 6000.0, 5e9, min_iterations=500)).configurations["3d_fullres"]
    assert np.prod(longer.patch_size) * longer.network["features_per_stage"][0] >= \
        np.prod(config.patch_size) * config.network["features_per_stage"][0]
    assert any(d.field == "num_iterations" and "calibration" in d.reason for d in config.decisions)


def test_lowres_and_cascade_when_the_patch_covers_little() -> None:
    plan = plan_dataset(BRAIN, Budget("cpu", 1 * 10**9, None, 1e10))
    assert {"2d", "2.5d", "3d_fullres", "3d_lowres", "3d_cascade_fullres"} == set(plan.configurations)
    lowres = plan.configurations["3d_lowres"]
    assert lowres.target_spacing[0] > 1.0
    cascade = plan.configurations["3d_cascade_fullres"]
    assert cascade.previous_stage == "3d_lowres"
    foreground = len([v for v in BRAIN.labels.values() if isinstance(v, int)]) - 1
    assert foreground >= 1  # the first stage's one-hot channels join the image's
    assert cascade.network["in_channels"] == len(BRAIN.channel_names) + foreground
    assert plan.configurations["3d_fullres"].network["in_channels"] == len(BRAIN.channel_names)
    barely = plan_dataset(BRAIN, Budget("cpu", 8 * 10**9, None, 1e10))  # patch covers ~22%: 1.06x would do
    assert "3d_lowres" not in barely.configurations
    assert any(d.field == "3d_lowres" and "too close" in d.reason
               for d in barely.configurations["3d_fullres"].decisions)
    small_images = _fingerprint([[1.0, 1.0, 1.0]] * 3, [[32, 48, 48]] * 3)
    assert "3d_lowres" not in plan_dataset(small_images, Budget("cpu", 8 * 10**9, None, 1e10)).configurations


def test_3d_data_gets_a_2_5d_configuration_with_neighbouring_slices_as_channels() -> None:
    two_channels = _fingerprint([[5.0, 0.8, 0.8]] * 3, [[30, 256, 256]] * 3, channel_names=("T1", "T2"))
    plan = plan_dataset(two_channels, Budget("cpu", 2 * 10**9, 1200, 5e9))
    flat, stacked = plan.configurations["2d"], plan.configurations["2.5d"]
    assert stacked.spatial_dims == 2 and stacked.network["spatial_dims"] == 2 and stacked.slice_context == 2
    assert stacked.network["in_channels"] == 2 * 5 and flat.network["in_channels"] == 2 and flat.slice_context == 0
    assert stacked.target_spacing == flat.target_spacing  # the patch may differ: 5x the input channels
    reason = next(d.reason for d in stacked.decisions if d.field == "slice_context")
    assert "5 slices" in reason and "+-10 mm" in reason and "find-best" in reason
    raw = copy.deepcopy(plan.to_dict())
    assert Plan.from_dict(raw).configurations["2.5d"].slice_context == 2
    raw["configurations"]["3d_fullres"]["slice_context"] = 1  # only a 2D configuration stacks slices
    with pytest.raises(MedsegError, match="slice_context"):
        Plan.from_dict(raw)
    del raw["configurations"]["3d_fullres"]["slice_context"]  # plans written before 2.5d: 0
    assert Plan.from_dict(raw).configurations["3d_fullres"].slice_context == 0
    apply_overrides(plan, ["2.5d.slice_context=1", "2.5d.batch_size=3"])  # a name with a dot; 3 slices
    assert (stacked.slice_context, stacked.network["in_channels"], stacked.batch_size) == (1, 6, 3)
    assert flat.batch_size != 3 and flat.network["in_channels"] == 2
    with pytest.raises(MedsegError, match="2D configuration"):
        apply_overrides(plan, ["3d_fullres.slice_context=1"])


def test_2d_dataset_gets_only_2d_and_every_decision_has_a_reason() -> None:
    plan = plan_dataset(_fingerprint([[1.0, 1.0]] * 3, [[512, 512]] * 3), Budget("cpu", 8 * 10**9, 1200, 5e9))
    assert list(plan.configurations) == ["2d"]
    fields = {d.field for d in plan.configurations["2d"].decisions}
    assert {"target_spacing", "normalization", "patch_size", "network", "batch_size", "num_iterations"} <= fields
    assert all(d.reason for d in plan.configurations["2d"].decisions)


def test_plan_json_round_trip_and_overrides() -> None:
    plan = plan_dataset(BRAIN, Budget("cpu", 2 * 10**9, 1200, 5e9))
    assert Plan.from_dict(copy.deepcopy(plan.to_dict())).to_dict() == plan.to_dict()
    divisor = np.prod(np.array(plan.configurations["3d_fullres"].network["strides"]), axis=0)
    new_patch = (divisor * 2).tolist()
    apply_overrides(plan, ["3d_fullres.batch_size=3", f"3d_fullres.patch_size={new_patch}",
                           "resampling.image_order=1"])
    config = plan.configurations["3d_fullres"]
    assert config.batch_size == 3 and config.patch_size == new_patch
    assert all(c.resampling["image_order"] == 1 for c in plan.configurations.values())
    assert config.decisions[-1].reason.startswith("set by the user")
    with pytest.raises(MedsegError, match="not a multiple"):
        apply_overrides(plan, ["3d_fullres.patch_size=[7,7,7]"])
    with pytest.raises(MedsegError, match="cannot override"):
        apply_overrides(plan, ["nonsense=1"])


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("45", 45)])
def test_parse_duration(text, seconds) -> None:
    assert parse_duration(text) == seconds


def test_parse_memory_and_bad_values() -> None:
    assert parse_memory("8GB") == 8 * 10**9 and parse_memory("512MiB") == 512 * 2**20
    with pytest.raises(MedsegError, match="duration"):
        parse_duration("soon")
    with pytest.raises(MedsegError, match="memory"):
        parse_memory("lots")


def test_calibration_times_the_training_step_in_each_precision_the_device_has() -> None:
    from medseg.compute import native_bfloat16
    from medseg.planning.budget import EPOCH_OVERHEAD, calibrate, measure_step_seconds

    calibration = calibrate("cpu", 2, seconds=0.5)
    steps = calibration["reference_step_seconds_by_precision"]
    assert set(steps) == ({"float32", "bfloat16"} if native_bfloat16("cpu") else {"float32"})
    assert calibration["precision"] in steps and all(s > 0 for s in steps.values())
    if calibration["precision"] == "bfloat16":  # chosen only when it measured faster
        assert steps["bfloat16"] < steps["float32"]
    assert calibration["reference_step_seconds"] == steps[calibration["precision"]]
    network = dict(spatial_dims=2, in_channels=1, num_classes=3, features_per_stage=[4, 8],
                   kernel_sizes=[[3, 3]] * 2, strides=[[1, 1], [2, 2]])
    step = measure_step_seconds(network, [16, 16], 2, "cpu", seconds=0.2)
    assert step > 0 and EPOCH_OVERHEAD > 0
