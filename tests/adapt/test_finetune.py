"""medseg adapt: every method trains exactly the parameters it names (counted independently from the plain
network), the folder of deltas is smaller than the base and loads through Predictor.from_folder, merging gives the
same logits, a changed or missing base is one clear error, a new label set gets a new head, and bad input is one
line with exit code 2."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from medseg.adapt.finetune import adapt_model
from medseg.adapt.merge import merge_adapted
from medseg.cli.app import app
from medseg.config.model_folder import fold_folder, read_model_spec, record_weights
from medseg.errors import MedsegError
from medseg.io import Image, read_image, write_image
from medseg.nets import create
from medseg.nets.from_folder import load_network
from medseg.weights_file import sha256_file
from tests.inference.conftest import make_model_folder, plan_for

FEATURES = [8, 16, 16, 16, 16]
QUICK = {"max_iterations": 2, "iterations_per_epoch": 2, "validation_batches": 1, "threads": 1}
RANK, REDUCTION = 2, 4


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    from medseg.synth.shapes import write_shapes_dataset

    return write_shapes_dataset(tmp_path_factory.mktemp("source") / "shapes", num_cases=3)


@pytest.fixture(scope="module")
def source_plan(source):
    return plan_for(source)


@pytest.fixture(scope="module")
def base(tmp_path_factory, source, source_plan) -> Path:
    folder = make_model_folder(tmp_path_factory.mktemp("base") / "base", source, "2d", plan=source_plan,
                               features=FEATURES)
    record_weights(folder / "fold_0", sha256_file(folder / "fold_0" / "weights.safetensors"))
    return folder


@pytest.fixture(scope="module")
def target(tmp_path_factory, source) -> Path:
    """The shapes as a two-channel dataset (the image and its negative) with one foreground label: another label
    set and another channel count than the base's."""
    root = tmp_path_factory.mktemp("target") / "target"
    for case in range(3):
        image = read_image(source / "imagesTr" / f"shapes_{case:03d}_0000.nii.gz")
        label = read_image(source / "labelsTr" / f"shapes_{case:03d}.nii.gz")
        geometry = {"spacing": image.spacing, "origin": image.origin, "direction": image.direction}
        write_image(image, root / "imagesTr" / f"t{case}_0000.nii.gz")
        write_image(Image(-image.array, **geometry), root / "imagesTr" / f"t{case}_0001.nii.gz")
        write_image(Image((label.array > 0).astype(np.uint8), **geometry), root / "labelsTr" / f"t{case}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "name": "target", "channel_names": {"0": "MR", "1": "MR negative"}, "labels": {"background": 0, "whole": 1},
        "numTraining": 3, "file_ending": ".nii.gz"}))
    return root


def plain_target_network(base: Path) -> nn.Module:
    """The base's architecture for the target (2 channels, 2 classes), without any added structure."""
    return create("plan_unet", 2, 2, 2, **read_model_spec(base).network.options)

HEAD, STEM = ("heads.0.conv.weight", "heads.0.conv.bias"), ("encoder.0.0.conv.weight",)


def expected_trainable(network: nn.Module, method: str) -> int:
    """The parameter count each method trains, from the plain network's layers (not from medseg.adapt)."""
    params = dict(network.named_parameters())
    always = sum(params[k].numel() for k in HEAD + STEM)
    convs = [(n, m) for n, m in network.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
             and n not in ("heads.0.conv", "encoder.0.0.conv")]
    if method == "full":
        return sum(p.numel() for p in params.values())
    if method == "linear-probe":
        return always
    if method == "bitfit":
        return always + sum(p.numel() for k, p in params.items() if k.endswith("bias") and k not in HEAD)
    if method == "affine-norm":
        return always + sum(p.numel() for m in network.modules() if isinstance(m, nn.InstanceNorm2d)
                            for p in m.parameters())
    if method == "decoder":
        return sum(p.numel() for k, p in params.items() if k.split(".")[0] in ("ups", "decoder", "heads")) + \
            params[STEM[0]].numel()
    if method == "lora":
        shapes = [m.weight.shape for _, m in convs]
        return always + sum(RANK * (s[0] + math.prod(s[1:])) for s in shapes
                            if RANK * (s[0] + math.prod(s[1:])) < math.prod(s))
    total = always
    for _, module in convs:
        if isinstance(module, nn.Conv2d) and max(module.kernel_size) > 1:
            channels = module.out_channels
            width = max(channels // REDUCTION, 4)
            total += 2 * channels * width + width + channels
            if method == "spatial-adapter":
                total += width * 9 + width
    return total


def adapt(base: Path, dataset: Path, method: str, output: Path, **train) -> object:
    return adapt_model(base, dataset, method=method, shots=2, output=output, seed=3, budget_seconds=None,
                       peft_options={"rank": RANK, "reduction": REDUCTION}, train_options={**QUICK, **train},
                       progress=False)


def logits(network: nn.Module, seed: int = 0) -> torch.Tensor:
    x = torch.randn(1, network.medseg_spec["in_channels"], 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return network(x)


METHODS = ["full", "decoder", "linear-probe", "bitfit", "affine-norm", "lora", "adapter", "spatial-adapter"]


@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_what_it_says_and_its_folder_loads_and_merges(method, base, target, tmp_path):
    from safetensors.torch import load_file

    from medseg.inference import Predictor

    result = adapt(base, target, method, tmp_path / "adapted")
    plain = plain_target_network(base)
    total = sum(p.numel() for p in plain.parameters())
    trained = expected_trainable(plain, method)
    assert result.counts.trainable == trained
    structure = trained - (sum(p.numel() for k, p in plain.named_parameters() if k in HEAD + STEM)
                           if method in ("lora", "adapter", "spatial-adapter") else 0)
    assert result.counts.frozen == total - (trained - structure if method in ("lora", "adapter", "spatial-adapter")
                                             else trained)
    assert result.new_head and result.new_stem
    spec = read_model_spec(tmp_path / "adapted")
    assert spec.task == "segmentation" and spec.label_values == [0, 1]
    assert spec.card.figures["adaptation"]["trainable_params"] == trained
    deltas = load_file(str(fold_folder(tmp_path / "adapted", "all") / "weights.safetensors"))
    assert sum(t.numel() for t in deltas.values()) == trained  # instance norm: no running statistics
    delta_bytes = (fold_folder(tmp_path / "adapted", "all") / "weights.safetensors").stat().st_size
    base_bytes = (fold_folder(base, "0") / "weights.safetensors").stat().st_size
    if method != "full":
        assert delta_bytes < base_bytes

    predictor = Predictor.from_folder(tmp_path / "adapted")
    image = read_image(target / "imagesTr" / "t0_0000.nii.gz")
    two = Image(np.concatenate([image.array, -image.array]), spacing=image.spacing, origin=image.origin,
                direction=image.direction)
    assert set(np.unique(predictor.predict(two).array)) <= {0, 1}

    adapted = load_network(tmp_path / "adapted", "all")
    merged_dir = merge_adapted(tmp_path / "adapted", tmp_path / "merged")
    merged = load_network(merged_dir, "all")
    assert (logits(adapted) - logits(merged)).abs().max() < 1e-5
    if method in ("linear-probe", "bitfit", "affine-norm", "decoder"):  # frozen tensors are the base's, bit for bit
        base_state = load_network(base, "0").state_dict()
        names = {n for n, _ in plain.named_parameters()}
        frozen = [k for k in names if k not in HEAD + STEM and not _trained_by(method, k)]
        assert frozen and all(torch.equal(adapted.state_dict()[k], base_state[k]) for k in frozen)


def _trained_by(method: str, name: str) -> bool:
    if method == "bitfit":
        return name.endswith("bias")
    if method == "affine-norm":
        return ".norm." in name
    if method == "decoder":
        return name.split(".")[0] in ("ups", "decoder", "heads")
    return False


def test_an_untrained_adaptation_to_the_same_label_set_keeps_the_head_and_computes_the_base(base, source, tmp_path):
    result = adapt(base, source, "lora", tmp_path / "same", learning_rate=0.0)
    assert not result.new_head and not result.new_stem
    assert (logits(load_network(tmp_path / "same", "all")) - logits(load_network(base, "0"))).abs().max() < 1e-5


def test_a_changed_or_missing_base_is_a_clear_error_and_a_merged_folder_needs_none(base, target, tmp_path):
    from medseg.inference import Predictor

    copy = tmp_path / "base_copy"
    shutil.copytree(base, copy)
    adapt(copy, target, "bitfit", tmp_path / "adapted")
    merged = merge_adapted(tmp_path / "adapted", tmp_path / "merged")
    weights = copy / "fold_0" / "weights.safetensors"
    original = weights.read_bytes()
    from medseg.config.model_folder import write_fold_weights

    state = load_network(copy, "0").state_dict()
    write_fold_weights(copy / "fold_0", {k: v + 1 for k, v in state.items()})  # retrained: a valid, other file
    with pytest.raises(MedsegError, match="base model's weights changed since the adaptation"):
        Predictor.from_folder(tmp_path / "adapted")
    weights.write_bytes(original)
    record_weights(copy / "fold_0", sha256_file(weights))
    Predictor.from_folder(tmp_path / "adapted")
    shutil.move(copy, tmp_path / "elsewhere")
    with pytest.raises(MedsegError, match="base model folder is missing"):
        Predictor.from_folder(tmp_path / "adapted")
    assert Predictor.from_folder(merged).label_values == [0, 1]


def test_the_cli_prints_the_counts_and_writes_a_merged_folder(base, target, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["adapt", str(base), str(target), "--method", "adapter", "--shots", "1", "--seed", "1",
                                 "--max-iterations", "1", "-o", str(tmp_path / "m"), "--merge"])
    assert result.exit_code == 0, result.output
    assert "trainable and" in result.output and "frozen parameters" in result.output and "new head" in result.output
    assert "1 shot(s)" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    from medseg.config.adaptation import adaptation_record

    assert adaptation_record(read_model_spec(tmp_path / "m")).base is None
    load_network(tmp_path / "m", "all")


@pytest.mark.parametrize("case, arguments, named", [
    ("unknown method", ["--method", "prompt-tuning", "--shots", "1"], "prompt-tuning"),
    ("too many shots", ["--method", "lora", "--shots", "9"], "target"),
    ("no shots", ["--method", "lora", "--shots", "0"], "target"),
    ("bad budget", ["--method", "lora", "--shots", "1", "--budget", "-3m"], "-3m"),
    ("even kernel", ["--method", "spatial-adapter", "--shots", "1", "--spatial-kernel", "2"], "spatial_kernel"),
])
def test_bad_adapt_input_is_one_line_and_exit_2(case, arguments, named, base, target, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["adapt", str(base), str(target), *arguments, "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, (case, result.output)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and named in lines[0] and "fix:" in lines[0] and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_bad_model_folders_are_one_line_and_exit_2(base, target, tmp_path):
    runner = CliRunner()
    for arguments, named in [
        (["adapt", str(tmp_path / "nothing"), str(target), "--method", "lora", "--shots", "1", "-o",
          str(tmp_path / "a")], "nothing"),
        (["adapt", str(base), str(tmp_path / "no_data"), "--method", "lora", "--shots", "1", "-o",
          str(tmp_path / "a")], "no_data"),
        (["adapt", str(base), str(target), "--method", "lora", "--shots", "1", "-o", str(base)], "base"),
        (["model", "merge", str(base), "-o", str(tmp_path / "merged")], "base"),
        (["model", "merge", str(tmp_path / "nothing"), "-o", str(tmp_path / "merged")], "nothing"),
    ]:
        result = runner.invoke(app, arguments)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and named in lines[0], (arguments, result.output)
    assert list(tmp_path.iterdir()) == []


def zoo_base(folder: Path, source: Path, source_plan, name: str, options: dict, configuration: str = "2d",
             patch: list[int] | None = None) -> Path:
    """A model folder of network ``name`` (``options``) for ``configuration`` of the shapes plan (its patch, or
    ``patch``), seeded random weights."""
    import copy

    from medseg.config.model_folder import (
        ModelSpec,
        NetworkSpec,
        write_fold_weights,
        write_segmentation_model,
    )
    from medseg.data import open_dataset

    plan = copy.deepcopy(source_plan)
    config = plan.configurations[configuration]
    config.patch_size, config.network_name = patch or config.patch_size, name
    dims = config.spatial_dims
    config.network = {"spatial_dims": dims, "in_channels": 1, "num_classes": 3, **options}
    write_segmentation_model(folder, ModelSpec("segmentation", NetworkSpec(name, dims, 1, 3, options), [0, 1, 2],
                                               configuration), plan, open_dataset(source).spec)
    torch.manual_seed(0)
    write_fold_weights(folder / "fold_0", create(name, dims, 1, 3, **options).state_dict())
    return folder


@pytest.mark.parametrize("method, key", [("lora", "attn.qkv.parametrizations.weight.0.lora_a"),
                                         ("adapter", "attn.proj.adapter.down.weight")])
def test_lora_and_adapters_reach_the_attention_of_a_transformer_unet(method, key, source, source_plan, target,
                                                                     tmp_path):
    from safetensors.torch import load_file

    from medseg.nets import model_info

    base = zoo_base(tmp_path / "unetr", source, source_plan, "unetr", dict(model_info("unetr").tiny), patch=[32, 32])
    result = adapt(base, target, method, tmp_path / method)
    deltas = load_file(str(fold_folder(tmp_path / method, "all") / "weights.safetensors"))
    assert any(k.endswith(key) for k in deltas)
    assert sum(t.numel() for t in deltas.values()) == result.counts.trainable < result.counts.frozen
    merged = merge_adapted(tmp_path / method, tmp_path / "merged")
    assert (logits(load_network(tmp_path / method, "all")) - logits(load_network(merged, "all"))).abs().max() < 1e-5


def test_batch_norm_statistics_travel_with_the_deltas(source, source_plan, target, tmp_path):
    from safetensors.torch import load_file

    options = {**plan_unet_options(source_plan), "norm": ["batch", {}]}
    base = zoo_base(tmp_path / "bn", source, source_plan, "plan_unet", options)
    result = adapt(base, target, "bitfit", tmp_path / "bitfit")
    deltas = load_file(str(fold_folder(tmp_path / "bitfit", "all") / "weights.safetensors"))
    statistics = [k for k in deltas if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert statistics and sum(deltas[k].numel() for k in deltas if k not in statistics) == result.counts.trainable
    trained = load_network(tmp_path / "bitfit", "all").state_dict()
    untouched = load_network(base, "0").state_dict()
    assert not torch.equal(trained[statistics[0]], untouched[statistics[0]])  # re-estimated on the shots
    merged = merge_adapted(tmp_path / "bitfit", tmp_path / "merged")
    assert (logits(load_network(tmp_path / "bitfit", "all")) - logits(load_network(merged, "all"))).abs().max() < 1e-5


def plan_unet_options(plan, configuration: str = "2d") -> dict:
    """The shapes plan's U-Net arguments at test width (no spatial_dims/channels/classes)."""
    network = {k: v for k, v in plan.configurations[configuration].network.items()
               if k not in ("spatial_dims", "in_channels", "num_classes")}
    return {**network, "features_per_stage": FEATURES[: len(network["features_per_stage"])], "deep_supervision": False}


@pytest.mark.slow
def test_a_3d_model_adapts_with_lora_on_its_3d_convolutions(source, source_plan, target, tmp_path):
    from medseg.inference import Predictor

    options = plan_unet_options(source_plan, "3d_fullres")
    base = zoo_base(tmp_path / "base3d", source, source_plan, "plan_unet", options, "3d_fullres")
    result = adapt(base, target, "lora", tmp_path / "lora3d")
    assert result.new_stem and result.new_head and 0 < result.counts.trainable < result.counts.frozen
    image = read_image(target / "imagesTr" / "t1_0000.nii.gz")
    two = Image(np.concatenate([image.array, -image.array]), spacing=image.spacing, origin=image.origin,
                direction=image.direction)
    labels = Predictor.from_folder(tmp_path / "lora3d", tta=False).predict(two)
    assert labels.array.shape == image.array.shape and set(np.unique(labels.array)) <= {0, 1}
