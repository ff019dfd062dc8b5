"""medseg train --unlabelled --semi: the teacher is the exponential moving average the docs say, the consistency
term ramps up with the schedule, fixmatch counts only the teacher's confident voxels, the run caches the
unlabelled images and records them, and bad input is one line with exit code 2 before anything is written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.errors import MedsegError
from medseg.io import Image, read_image, write_image
from medseg.training.semi_supervised import SemiOptions, SemiSupervisedTask, rampup_factor
from tests.training.conftest import tiny_dataset_and_plan

QUICK = ["--max-iterations", "6", "--iterations-per-epoch", "3", "--threads", "1", "--workers", "0"]


def invoke(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


class FixedSupervised:
    """A stand-in for the segmentation task: a zero supervised loss, two classes, on the CPU."""

    name, default_iterations, num_classes, device, num_workers, seed = "fixed", 10, 2, torch.device("cpu"), 0, 0

    def loss(self, network, batch):
        return network(batch).sum() * 0.0


def test_rampup_follows_the_sigmoid_shape_then_stays_at_one():
    assert rampup_factor(0.0, 0.3) == pytest.approx(math.exp(-5))
    assert rampup_factor(0.15, 0.3) == pytest.approx(math.exp(-5 * 0.25))
    assert rampup_factor(0.3, 0.3) == 1.0 and rampup_factor(0.9, 0.3) == 1.0 and rampup_factor(0.0, 0.0) == 1.0


def test_the_teacher_is_the_exponential_moving_average_of_the_student():
    torch.manual_seed(0)
    student = nn.Conv2d(1, 2, 3, padding=1)
    task = SemiSupervisedTask(FixedSupervised(), SemiOptions(cache="unused", cases=["a"], ema=0.9))
    image = torch.randn(2, 1, 8, 8)
    expected = None
    for step in range(5):
        task.loss(student, {"labelled": image, "unlabelled": image})
        decay = min(1 - 1 / (step + 1), 0.9)
        current = student.weight.detach().clone()
        expected = current if expected is None else decay * expected + (1 - decay) * current
        torch.testing.assert_close(task.teacher.weight, expected)
        with torch.no_grad():  # the "optimizer step" between two losses
            student.weight.add_(0.1 * torch.randn_like(student.weight))
    assert not task.teacher.weight.requires_grad


def test_fixmatch_counts_only_voxels_where_the_teacher_is_confident():
    class Fixed(nn.Module):
        """Logits that do not depend on the input: class 1 at 0.99 on the left half, 0.6 on the right."""

        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            logits = torch.zeros(x.shape[0], 2, *x.shape[2:])
            logits[:, 1, :, :4] = math.log(99)
            logits[:, 1, :, 4:] = math.log(1.5)
            return logits + self.bias

    task = SemiSupervisedTask(FixedSupervised(), SemiOptions("fixmatch", cache="unused", cases=["a"], weight=1.0,
                                                             rampup=0.0, threshold=0.95))
    image = torch.zeros(1, 1, 8, 8)
    loss = task.loss(Fixed(), {"labelled": image, "unlabelled": image})
    # only the left half (the teacher's 0.99 for class 1) counts, with the student's CE there: -log 0.99
    assert float(loss.detach()) == pytest.approx(-math.log(0.99) * 0.5, rel=1e-4)


def test_mean_teacher_consistency_is_the_squared_softmax_difference():
    torch.manual_seed(0)
    task = SemiSupervisedTask(FixedSupervised(), SemiOptions(cache="unused", cases=["a"], weight=2.0, rampup=0.0))
    network = nn.Conv2d(1, 2, 1)
    image = torch.randn(2, 1, 6, 6)
    task.loss(network, {"labelled": image, "unlabelled": image})  # the teacher is the network now
    torch.manual_seed(5)
    loss = task.loss(network, {"labelled": image, "unlabelled": image})
    torch.manual_seed(5)
    noisy_teacher = image + (torch.randn_like(image) * 0.1).clamp(-0.2, 0.2)
    noisy_student = image + (torch.randn_like(image) * 0.1).clamp(-0.2, 0.2)
    with torch.no_grad():
        expected = ((torch.softmax(network(noisy_student), 1) - torch.softmax(task.teacher(noisy_teacher), 1)) ** 2
                    ).mean() * 2.0
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_options_are_checked():
    with pytest.raises(MedsegError, match="mean-teacher, fixmatch"):
        SemiOptions("cps")
    with pytest.raises(MedsegError, match="0 < ema < 1"):
        SemiOptions(ema=1.0)
    with pytest.raises(MedsegError, match="--unlabelled"):
        SemiSupervisedTask(FixedSupervised(), SemiOptions(cases=[]))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("semi")
    dataset, plans = tiny_dataset_and_plan(root)
    unlabelled = root / "unlabelled"
    unlabelled.mkdir()
    for path in sorted((dataset / "imagesTr").iterdir())[:2]:
        (unlabelled / path.name.replace("shapes", "extra")).symlink_to(path)
    return dataset, plans, unlabelled


@pytest.mark.parametrize("method", ["mean-teacher", "fixmatch"])
def test_a_semi_supervised_run_caches_and_records_the_unlabelled_images(data, tmp_path, method):
    dataset, plans, unlabelled = data
    model = tmp_path / "model"
    result = invoke("train", dataset, "-c", "2d", "-f", "all", "-o", model, "-p", plans, "--unlabelled", unlabelled,
                    "--semi", method, "--no-validation", *QUICK)
    assert result.exit_code == 0, result.output
    semi = json.loads((model / "fold_all" / "train_config.json").read_text())["task_options"]["semi"]
    assert semi["method"] == method and sorted(semi["cases"]) == sorted(
        p.name.removesuffix("_0000.nii.gz") for p in unlabelled.iterdir())
    cache = Path(semi["cache"])
    assert cache == (model / "preprocessed" / "2d_unlabelled").resolve()
    for case in semi["cases"]:
        assert not np.load(cache / f"{case}_seg.npy").any()
    history = json.loads((model / "fold_all" / "training_log.json").read_text())["history"]
    assert history[-1]["iteration"] == 6 and all(np.isfinite(h["consistency"]) for h in history)


def test_semi_without_unlabelled_images_or_with_the_wrong_channels_is_refused(data, tmp_path):
    dataset, plans, _ = data
    result = invoke("train", dataset, "-c", "2d", "-f", "all", "-o", tmp_path / "a", "-p", plans,
                    "--semi", "fixmatch", *QUICK)
    assert result.exit_code == 2 and "--unlabelled" in result.output
    rgb = tmp_path / "rgb"
    image = read_image(next((dataset / "imagesTr").iterdir()))
    write_image(Image(np.repeat(image.array, 3, axis=0), spacing=image.spacing, origin=image.origin,
                      direction=image.direction), rgb / "y.nii.gz")
    result = invoke("train", dataset, "-c", "2d", "-f", "all", "-o", tmp_path / "b", "-p", plans,
                    "--unlabelled", rgb, *QUICK)
    assert result.exit_code == 2 and "y.nii.gz" in result.output and "3 channel(s)" in result.output
    result = invoke("train", dataset, "-c", "2d", "-f", "all", "-o", tmp_path / "c", "-p", plans,
                    "--unlabelled", tmp_path / "missing", *QUICK)
    assert result.exit_code == 2 and "missing" in result.output
    assert not any((tmp_path / name).exists() for name in "abc")
