"""medseg pretrain (masked-image modelling) and medseg train --init: the masks mask what they say, the loss counts
only masked voxels, pretraining lowers the held reconstruction error, unlabelled images are cached as a labelled
case's image would be, the pretrained folder starts medseg train (every tensor but the head copied) and medseg
adapt (new head), prediction refuses it, and bad input is one line with exit code 2 and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medseg.adapt.masked_image import block_masks, mask_block, masked_mse, network_stride
from medseg.cli.app import app
from medseg.config import Plan, read_json
from medseg.config.model_folder import read_fold_weights, read_model_spec
from medseg.errors import MedsegError
from medseg.io import Image, read_image, write_image
from tests.training.conftest import tiny_dataset_and_plan

QUICK = ["--max-iterations", "120", "--iterations-per-epoch", "30", "--threads", "1", "--workers", "0"]


def invoke(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    return tiny_dataset_and_plan(tmp_path_factory.mktemp("pretrain"))


@pytest.fixture(scope="module")
def pretrained(data, tmp_path_factory) -> Path:
    dataset, plans = data
    output = tmp_path_factory.mktemp("pretrained") / "pre"
    result = invoke("pretrain", dataset, "-c", "2d", "-p", plans, "-o", output, "--budget", "5m", *QUICK)
    assert result.exit_code == 0, result.output
    return output


def test_block_masks_mask_the_asked_share_of_whole_blocks():
    masks = block_masks(3, (20, 32), (8, 8), 0.5, torch.Generator().manual_seed(0))
    assert masks.shape == (3, 1, 20, 32) and set(masks.unique().tolist()) == {0.0, 1.0}
    for mask in masks[:, 0]:
        corners = []
        for row in range(0, 20, 8):  # a 3 x 4 grid of blocks, the last row cut at the patch's edge (4 rows)
            for column in range(0, 32, 8):
                block = mask[row:row + 8, column:column + 8]
                assert len(block.unique()) == 1  # a block is masked whole or not at all
                corners.append(float(block[0, 0]))
        assert sum(corners) == 6  # round(0.5 * 12) blocks
    assert not torch.equal(masks[0], masks[1])  # each sample its own draw


def test_masked_mse_counts_only_masked_voxels():
    image = torch.zeros(1, 2, 4, 4)
    reconstruction = torch.zeros(1, 2, 4, 4)
    reconstruction[:, :, :2] = 3.0  # wrong only in the top half
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 2:, :] = 1.0
    assert float(masked_mse(reconstruction, image, mask)) == 0.0
    mask[..., :1, :] = 1.0
    assert float(masked_mse(reconstruction, image, mask)) == pytest.approx(9.0 * 8 / 24)


def test_block_is_the_networks_stride_capped_at_half_the_patch(data):
    _, plans = data
    config = Plan.from_dict(read_json(plans)).configurations["2d"]
    stride = network_stride(config)
    assert stride == [int(np.prod([s if isinstance(s, int) else s[d] for s in config.network["strides"]]))
                      for d in range(2)]
    assert mask_block(config) == [min(s, p // 2) for s, p in zip(stride, config.patch_size)]


def test_pretraining_lowers_the_reconstruction_error_and_writes_a_pretrained_folder(pretrained, data):
    from medseg.adapt.masked_image import MaskedImageOptions, MaskedImageTask
    from medseg.nets.from_folder import build_network

    spec = read_model_spec(pretrained)
    assert spec.task == "pretrained" and spec.network.num_classes == spec.network.in_channels == 1
    history = json.loads((pretrained / "fold_all" / "training_log.json").read_text())["history"]
    errors = [h["val_masked_mse"] for h in history]
    assert len(errors) == 4 and errors[-1] < errors[0], errors
    assert spec.card.steps == 120 and spec.card.figures["val_masked_mse"]["last_epoch"] == errors[-1]
    assert spec.extra["pretraining"]["images"] == 4
    # on the same fixed patches and masks: the pretrained network against the same network untrained and against
    # filling the masked blocks with the mean (0)
    config = Plan.from_dict(read_json(pretrained / "plans.json")).configurations["2d"]
    cases = sorted(p.stem for p in (pretrained / "preprocessed" / "2d").glob("*.json"))
    task = MaskedImageTask(configuration=config, cache_dir=pretrained / "preprocessed" / "2d", train_cases=cases,
                           val_cases=cases, options=MaskedImageOptions("2d", validation_batches=8), num_workers=0)
    torch.manual_seed(0)
    untrained = build_network(spec)
    trained = build_network(spec)
    trained.load_state_dict(read_fold_weights(pretrained, "all"))
    with torch.no_grad():
        mean_fill = task.validate(torch.nn.Identity())["val_masked_mse"]  # the masked input: 0 in the blocks
        before = task.validate(untrained)["val_masked_mse"]
        after = task.validate(trained)["val_masked_mse"]
    assert after < 0.9 * min(before, mean_fill), (after, before, mean_fill)  # measured 0.84-0.85 of it


def test_unlabelled_images_are_cached_like_a_labelled_cases_image(pretrained, data):
    from medseg.data import cache, open_dataset
    from medseg.preprocess.pipeline import preprocess_arrays

    dataset, plans = data
    config = Plan.from_dict(read_json(plans)).configurations["2d"]
    case = open_dataset(dataset).cases[0]
    image = read_image(case.image_files[0])
    expected = preprocess_arrays(image.array, None, list(image.spacing), config).data
    cached = cache.read_case(pretrained / "preprocessed" / "2d", case.case_id)
    np.testing.assert_array_equal(cached.data, expected)
    assert not cached.seg.any() and cached.class_locations == {}


def test_train_init_copies_every_tensor_but_the_head(pretrained, data, tmp_path):
    from medseg.config.model_folder import ModelSpec
    from medseg.nets.from_folder import build_network
    from medseg.training.initial_weights import load_start_weights, read_start

    dataset, _ = data
    result = invoke("train", dataset, "-c", "2d", "-f", "all", "-o", tmp_path / "model", "--init", pretrained,
                    "--max-iterations", "2", "--iterations-per-epoch", "2", "--threads", "1", "--workers", "0")
    assert result.exit_code == 0, result.output
    model_spec = read_model_spec(tmp_path / "model")
    record = model_spec.extra["init"]
    assert record["task"] == "pretrained" and not record["head_kept"]
    assert record["folder"] == str(pretrained.resolve())
    # the run's plan is the pretrained one moved to the dataset: the same network
    assert Plan.from_dict(read_json(tmp_path / "model" / "plans.json")).configurations["2d"].network == \
        {**Plan.from_dict(read_json(pretrained / "plans.json")).configurations["2d"].network, "num_classes": 3}
    # the weights a run starts from, checked at step 0
    start = read_start(pretrained)
    spec = ModelSpec("segmentation", model_spec.network, model_spec.label_values, "2d")
    torch.manual_seed(1)
    network = build_network(spec)
    drawn = {k: v.clone() for k, v in network.state_dict().items()}
    load_start_weights(network, spec, start)
    state, source = network.state_dict(), read_fold_weights(pretrained, "all")
    heads = {k for k in state if state[k].shape != source[k].shape}
    assert heads and all(k.startswith("heads.") for k in heads)
    for key, value in state.items():
        if key in heads:
            torch.testing.assert_close(value, drawn[key])
        else:
            torch.testing.assert_close(value, source[key])
    assert record["tensors_copied"] == len(state) - len(heads)


def test_adapt_starts_from_a_pretrained_folder_with_a_new_head(pretrained, data, tmp_path):
    from medseg.inference import Predictor

    dataset, _ = data
    result = invoke("adapt", pretrained, dataset, "--method", "lora", "--shots", "2", "-o", tmp_path / "adapted",
                    "--max-iterations", "2", "--iterations-per-epoch", "2", "--budget", "1m", "--workers", "0")
    assert result.exit_code == 0, result.output
    assert "new head" in result.output
    predictor = Predictor.from_folder(tmp_path / "adapted")
    assert predictor.label_values == [0, 1, 2]


def test_prediction_refuses_a_pretrained_folder(pretrained):
    from medseg.inference import Predictor

    with pytest.raises(MedsegError, match="pretrained model.*--init"):
        Predictor.from_folder(pretrained)


def test_init_with_a_plan_of_another_network_is_one_error(pretrained, data, tmp_path):
    dataset, plans = data
    other = tmp_path / "other_plans.json"
    plan = read_json(plans)
    plan["configurations"]["2d"]["network"]["features_per_stage"] = [
        2 * f for f in plan["configurations"]["2d"]["network"]["features_per_stage"]]
    other.write_text(json.dumps(plan))
    result = invoke("train", dataset, "-c", "2d", "-f", "all", "-o", tmp_path / "model", "-p", other, "--init",
                    pretrained, "--max-iterations", "2", "--threads", "1", "--workers", "0")
    assert result.exit_code == 2
    assert "the --init weights do not fit" in result.output and "omit --plans" in result.output


def test_init_with_another_configuration_or_a_missing_folder_is_refused(pretrained, data, tmp_path):
    dataset, _ = data
    result = invoke("train", dataset, "-c", "3d_fullres", "-f", "all", "-o", tmp_path / "a", "--init", pretrained)
    assert result.exit_code == 2 and "use -c 2d" in result.output
    result = invoke("train", dataset, "-c", "2d", "-f", "all", "-o", tmp_path / "b", "--init", tmp_path / "none")
    assert result.exit_code == 2 and "--init model folder is not there" in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_pretrain_refuses_images_of_another_channel_count_before_writing(data, tmp_path):
    dataset, plans = data
    folder = tmp_path / "rgb"
    image = read_image(next((dataset / "imagesTr").iterdir()))
    write_image(Image(np.repeat(image.array, 3, axis=0), spacing=image.spacing, origin=image.origin,
                      direction=image.direction), folder / "x.nii.gz")
    result = invoke("pretrain", dataset, folder, "-c", "2d", "-p", plans, "-o", tmp_path / "out", *QUICK)
    assert result.exit_code == 2
    assert "x.nii.gz" in result.output and "3 channel(s); the network takes 1" in result.output
    assert not (tmp_path / "out").exists()


def test_pretrain_without_a_plan_needs_a_dataset_first(tmp_path, data):
    dataset, _ = data
    images = tmp_path / "images"
    images.mkdir()
    for path in (dataset / "imagesTr").iterdir():
        (images / path.name).symlink_to(path)
    result = invoke("pretrain", images, "-c", "2d", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "--plans" in result.output
    result = invoke("pretrain", dataset, "-c", "2d", "-o", tmp_path / "out", "--method", "jigsaw")
    assert result.exit_code == 2 and "mae" in result.output
    assert not (tmp_path / "out").exists()


def test_pretrain_masks_the_block_asked_for_and_refuses_one_of_another_dimension(data, tmp_path):
    dataset, plans = data
    short = ["--max-iterations", "2", "--iterations-per-epoch", "2", "--threads", "1", "--workers", "0"]
    result = invoke("pretrain", dataset, "-c", "2d", "-p", plans, "-o", tmp_path / "b", "--block", "4x2", *short)
    assert result.exit_code == 0, result.output
    assert read_model_spec(tmp_path / "b").extra["pretraining"]["block"] == [4, 2]
    for bad, said in (("4x4x4", "2D patch"), ("4xfour", "--block")):
        result = invoke("pretrain", dataset, "-c", "2d", "-p", plans, "-o", tmp_path / "bad", "--block", bad, *short)
        assert result.exit_code == 2 and said in result.output, result.output
        assert not (tmp_path / "bad").exists()
