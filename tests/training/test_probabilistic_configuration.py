"""The probabilistic configuration end to end on real CVC-ClinicDB polyps with simulated raters: planned because
the dataset has labelsTr/<case>_r<K>, the raters' maps cached one-hot as the last data channels, each patch
trained on one of its raters (what the posterior net sees), and `medseg predict --samples` writing plausible
label maps on the input's grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.config import Plan, read_json
from medseg.data import cache
from medseg.io import read_image
from medseg.training.segmentation_task import SegmentationOptions, SegmentationTask
from tests.conftest import shared_subset


@pytest.fixture
def rater_dataset(tmp_path: Path) -> Path:
    root = shared_subset("cvc_clinicdb", 3, tmp_path / "cvc")
    result = CliRunner().invoke(app, ["raters", "simulate", str(root), "-o", str(tmp_path / "raters"),
                                      "--raters", "3", "--bias", "4"])
    assert result.exit_code == 0, result.output
    return tmp_path / "raters"


def test_probabilistic_model_trains_on_raters_and_writes_samples(rater_dataset: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    plans, model = tmp_path / "plans.json", tmp_path / "model"
    result = runner.invoke(app, ["plan", str(rater_dataset), "-o", str(plans), "--flops", "1e10", "--budget", "60",
                                 "--set", "probabilistic.patch_size=[64,64]", "--set", "2d.patch_size=[64,64]"])
    assert result.exit_code == 0, result.output
    config = Plan.from_dict(read_json(plans)).configurations["probabilistic"]
    assert config.raters == 3 and config.network_name == "prob_unet" and config.network["in_channels"] == 3
    result = runner.invoke(app, ["train", str(rater_dataset), "-c", "probabilistic", "-f", "0", "-o", str(model),
                                 "-p", str(plans), "--max-iterations", "4", "--iterations-per-epoch", "2",
                                 "--workers", "0", "--no-validation"])
    assert result.exit_code == 0, result.output
    assert read_json(model / "model.json")["network"]["name"] == "prob_unet"

    cached = cache.read_case(model / "preprocessed" / "probabilistic", "cvc_clinicdb_0000")
    assert cached.data.shape[0] == 3 + 3  # RGB, then rater 1, 2, 3's polyp one-hot, in the content crop
    crop = tuple(slice(a, b) for a, b in cached.properties["crop_bbox"])
    for k in (1, 2, 3):
        rater = read_image(rater_dataset / "labelsTr" / f"cvc_clinicdb_0000_r{k}.png").array[0][crop]
        assert np.array_equal(np.asarray(cached.data[2 + k]), (rater == 1).astype(np.float32))

    out = tmp_path / "pred"
    result = runner.invoke(app, ["predict", "-m", str(model), "-i", str(rater_dataset / "imagesTr"), "-o", str(out),
                                 "--samples", "2", "--no-tta"])
    assert result.exit_code == 0, result.output
    for index in range(3):
        labels = read_image(out / f"cvc_clinicdb_{index:04d}.png")
        for k in (1, 2):
            sample = read_image(out / "samples" / f"cvc_clinicdb_{index:04d}_s{k}.png")
            assert sample.spatial_shape == labels.spatial_shape == (256, 256)
            assert set(np.unique(sample.array)) <= {0, 1}

    result = runner.invoke(app, ["evaluate", str(out / "samples"), str(rater_dataset / "labelsTr"), "--raters",
                                 "-o", str(tmp_path / "eval")])
    assert result.exit_code == 0 and result.output.startswith("raters: ged"), result.output
    summary = read_json(tmp_path / "eval" / "raters.json")
    assert summary["cases"] == 3 and summary["per_case"]["cvc_clinicdb_0000"]["samples"] == 2
    assert summary["per_case"]["cvc_clinicdb_0000"]["raters"] == 3
    assert 0.0 <= summary["metrics"]["best_dice"]["mean"] <= 1.0
    result = runner.invoke(app, ["evaluate", str(out / "samples"), str(out), "--raters", "-o", str(tmp_path / "e2")])
    assert result.exit_code == 2 and "have samples but no raters' maps" in result.output

    plain = tmp_path / "plain"
    result = runner.invoke(app, ["train", str(rater_dataset), "-c", "2d", "-f", "0", "-o", str(plain), "-p",
                                 str(plans), "--max-iterations", "2", "--iterations-per-epoch", "2", "--workers", "0",
                                 "--no-validation"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["predict", "-m", str(plain), "-i", str(rater_dataset / "imagesTr"), "-o",
                                 str(tmp_path / "plain_pred"), "--samples", "2"])
    assert result.exit_code == 2 and "--samples needs a probabilistic model" in result.output
    assert not (tmp_path / "plain_pred").exists() or not any((tmp_path / "plain_pred").iterdir())


class _Recorder(nn.Module):
    """Stands in for the probabilistic U-Net: records the one-hot map the posterior would see."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))
        self.seen: list[torch.Tensor] = []

    def forward(self, image: torch.Tensor, segmentation: torch.Tensor):
        self.seen.append(segmentation)
        logits = torch.zeros(image.shape[0], 2, *image.shape[2:]) + self.bias
        zero = torch.zeros(image.shape[0])
        return logits, zero, zero


def test_each_patch_trains_on_one_of_its_raters(rater_dataset: Path, tmp_path: Path) -> None:
    from medseg.planning.service import make_plan

    config = make_plan(rater_dataset, budget=60, flops_per_second=1e10, progress=False).configurations[
        "probabilistic"]
    task = SegmentationTask(configuration=config, cache_dir=tmp_path, train_cases=[], val_cases=[],
                            label_values=[0, 1], options=SegmentationOptions(configuration="probabilistic"))
    assert task.target_channels == 3
    image = torch.randn(8, 3, 16, 16)
    raters = torch.zeros(8, 3, 16, 16)
    raters[:, 1, :8] = 1.0  # rater 2: the top half
    raters[:, 2] = 0.9  # rater 3: everything (a warped map is not exactly 0/1)
    network = _Recorder()
    torch.manual_seed(0)
    for _ in range(4):
        task.loss(network, {"image": torch.cat([image, raters], 1), "label": torch.zeros(8, 1, 16, 16)})
    drawn = set()
    for segmentation in network.seen:
        for sample in segmentation:
            foreground = sample[1] > 0
            matches = [k for k in range(3) if torch.equal(foreground, raters[0, k] > 0.5)]
            assert len(matches) == 1 and torch.equal(sample[0], 1.0 - sample[1])
            drawn.add(matches[0])
    assert drawn == {0, 1, 2}
