"""The whole path on a CUDA GPU: plan for ``--device cuda``, train under bfloat16 autocast, predict, and the
interactive and in-context sessions, each checked against the same model on the CPU. Skipped where torch sees no
GPU (CI, a laptop); ``bench/gpu_check.sh`` runs them on a lent GPU machine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.config import Plan, read_json
from medseg.io import read_image
from tests.conftest import shared_dataset, shared_subset

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA GPU visible (bench/gpu_check.sh runs these on a GPU machine)")
BOTH = (("gpu", "cuda"), ("cpu", "cpu"))  # (output name, device): each result on the GPU against the CPU's


def _agreement(first: Path, second: Path) -> float:
    """Fraction of voxels on which the label maps of the files of two folders agree, over all files."""
    equal = total = 0
    for path in sorted(first.iterdir()):
        a, b = read_image(path).array, read_image(second / path.name).array
        equal, total = equal + int((a == b).sum()), total + a.size
    return equal / total


def test_plan_train_and_predict_on_cuda_agree_with_the_cpu(tmp_path: Path) -> None:
    runner = CliRunner()
    dataset, plans, model = shared_subset("isbi2012_em", 4, tmp_path / "isbi"), tmp_path / "plans.json", tmp_path / "m"
    result = runner.invoke(app, ["plan", str(dataset), "-o", str(plans), "--device", "cuda", "--budget", "120"])
    assert result.exit_code == 0, result.output
    assert Plan.from_dict(read_json(plans)).device == "cuda"
    result = runner.invoke(app, ["train", str(dataset), "-c", "2d", "-f", "all", "-o", str(model), "-p", str(plans),
                                 "--max-iterations", "40", "--iterations-per-epoch", "20", "--workers", "2"])
    assert result.exit_code == 0, result.output
    log = read_json(model / "fold_all" / "training_log.json")
    losses = [entry["train_loss"] for entry in log["history"]]
    assert len(losses) == 2 and np.isfinite(losses).all() and losses[-1] < losses[0]
    for name, device in BOTH:
        result = runner.invoke(app, ["predict", "-i", str(dataset / "imagesTr"), "-o", str(tmp_path / name),
                                     "-m", str(model), "--device", device])
        assert result.exit_code == 0, result.output
    assert _agreement(tmp_path / "gpu", tmp_path / "cpu") > 0.99


def test_interactive_and_incontext_models_train_and_predict_on_cuda(tmp_path: Path) -> None:
    from medseg.incontext.session import InContextSession
    from medseg.incontext.support import SupportSet
    from medseg.interactive.predictor import load_segmenter
    from medseg.interactive.prompts import Click, PromptSet

    runner = CliRunner()
    dataset = shared_dataset("cvc_clinicdb")
    result = runner.invoke(app, ["train-interactive", str(dataset), "-o", str(tmp_path / "interactive"),
                                 "--budget", "20s", "--grid", "64", "--features", "8,16,32", "--device", "cuda"])
    assert result.exit_code == 0, result.output
    label = read_image(dataset / "labelsTr" / "cvc_clinicdb_0000.png").array[0] > 0
    image = read_image(dataset / "imagesTr" / "cvc_clinicdb_0000_0000.png").array
    rows, cols = np.nonzero(label)
    prompts = PromptSet([Click((float(rows.mean()), float(cols.mean())), True)])
    masks = {}
    for name, device in BOTH:
        segmenter = load_segmenter(tmp_path / "interactive", device=device)
        masks[name] = segmenter.predict(segmenter.embed(image), prompts)
    assert masks["gpu"].shape == label.shape and np.mean(masks["gpu"] == masks["cpu"]) > 0.99

    result = runner.invoke(app, ["train-incontext", str(shared_dataset("hippocampus")), "-o",
                                 str(tmp_path / "incontext"), "--budget", "20s", "--grid", "32", "--features", "8,16",
                                 "--validate-every", "10", "--device", "cuda"])
    assert result.exit_code == 0, result.output
    rng = np.random.default_rng(0)
    support_mask = np.zeros((32, 32), bool)
    support_mask[8:20, 10:22] = True
    support = SupportSet.from_arrays([rng.random((32, 32))], [support_mask])
    target = rng.random((32, 32))
    predictions = {name: InContextSession(tmp_path / "incontext", device=device).predict(target, support).mask
                   for name, device in BOTH}
    assert np.mean(predictions["gpu"] == predictions["cpu"]) > 0.99
