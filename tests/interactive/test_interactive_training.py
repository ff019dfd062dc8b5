"""Slices for training, the interaction-simulating trainer (learning, resume) and `medseg train-interactive`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.nets.promptable_unet import PromptableConfig
from medseg.interactive.predictor import load_segmenter
from medseg.interactive.slices import SliceBank, load_slices, split_case_ids
from medseg.interactive.training import interactive_train_config, interactive_trainer
from medseg.training.checkpoint import load_checkpoint
from tests.conftest import shared_dataset


def test_splits_are_blocks_of_sorted_ids():
    ids = [f"c{i:02d}" for i in range(10)][::-1]
    assert split_case_ids(ids, 0.8) == ([f"c{i:02d}" for i in range(8)], ["c08", "c09"])
    assert split_case_ids(["a", "b"], 0.99) == (["a"], ["b"])
    assert split_case_ids(["a", "b"], 1.0) == (["a", "b"], [])


def test_load_slices_reads_2d_cases_and_the_regions_of_3d_volumes():
    cvc = load_slices([shared_dataset("cvc_clinicdb")], max_cases=2, grid=(64, 64))
    assert cvc.images.shape == (2, 3, 64, 64) and cvc.images.dtype == torch.float16
    assert cvc.targets.shape == (2, 64, 64) and cvc.targets.any((1, 2)).all()
    assert cvc.sources[0].endswith("/polyp") and cvc.case_ids["cvc_clinicdb"] == ["cvc_clinicdb_0000", "cvc_clinicdb_0001"]
    held_out = load_slices([shared_dataset("cvc_clinicdb")], part="holdout", max_cases=1, grid=(64, 64))
    assert held_out.case_ids["cvc_clinicdb"][0] > "cvc_clinicdb_0486"  # after the first 80 % (487 of 609)
    brats = load_slices([shared_dataset("brats2013_mini")], max_cases=1, grid=(64, 64), slice_step=8)
    objects = {source.split("/")[2] for source in brats.sources}
    assert objects == {"whole_tumor", "tumor_core", "enhancing_tumor"}  # the dataset's regions
    assert all("/z" in source for source in brats.sources) and float(brats.images.max()) <= 1.0


def _distractor_bank(count: int, size: int, seed: int) -> SliceBank:
    """Two or three equally bright discs per image; the target is one of them, so only the prompt says which."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    images, targets = [], []
    for _ in range(count):
        discs = []
        while len(discs) < int(rng.integers(2, 4)):
            r, c, radius = rng.uniform(10, size - 10), rng.uniform(10, size - 10), rng.uniform(5, 9)
            if all(np.hypot(r - r2, c - c2) > radius + q + 3 for r2, c2, q in discs):
                discs.append((r, c, radius))
        masks = [np.hypot(rows - r, cols - c) <= q for r, c, q in discs]
        image = 0.2 + 0.6 * np.any(masks, 0) + rng.normal(0, 0.05, (size, size))
        images.append(np.repeat(np.clip(image, 0, 1)[None], 3, 0))
        targets.append(masks[int(rng.integers(len(masks)))])
    return SliceBank(torch.tensor(np.array(images), dtype=torch.float16), torch.tensor(np.array(targets)),
                     np.zeros(count, int), [f"synthetic/{i}" for i in range(count)], ["synthetic"])


@pytest.mark.slow
def test_training_learns_to_segment_the_clicked_object_among_look_alikes(tmp_path):
    train, held_out = _distractor_bank(64, 48, seed=0), _distractor_bank(24, 48, seed=1)
    config = interactive_train_config(budget_seconds=None, max_iterations=250, batch_size=8, validate_every=250,
                                      learning_rate=3e-3, mode_weights={"clicks": 1.0}, max_corrections=2)
    trainer = interactive_trainer(train, tmp_path / "model", config=config, validation=held_out,
                                  network_config=PromptableConfig(features=[8, 16, 32]))
    with torch.no_grad():
        before = trainer.task.validate(trainer.network)
    trainer.run(progress=False)
    after = trainer.state.history[-1]
    # untrained: about chance; trained: the clicked disc, not its look-alikes
    assert before["dice_1_clicks"] < 0.4
    assert after["dice_1_clicks"] > 0.75 and after["dice_5_clicks"] > 0.8
    segmenter = load_segmenter(tmp_path / "model")
    assert segmenter.info["steps"] == 250 and (tmp_path / "model" / "fold_all" / "progress.png").stat().st_size > 0
    assert segmenter.info["card"]["figures"]["holdout_slices"]["dice_5_clicks"] == after["dice_5_clicks"]


def test_resume_continues_from_the_checkpoint(tmp_path):
    bank = _distractor_bank(8, 48, seed=0)
    network = PromptableConfig(features=[4, 8])
    config = interactive_train_config(budget_seconds=None, max_iterations=3, batch_size=2, validate_every=2)
    interactive_trainer(bank, tmp_path, config=config, network_config=network).run(progress=False)
    state = load_checkpoint(tmp_path / "fold_all" / "checkpoint.pt")  # weights_only: plain tensors and numbers
    assert state["state"]["iteration"] == 3
    config.max_iterations = 5
    resumed = interactive_trainer(bank, tmp_path, config=config, network_config=network)
    assert resumed.resume()
    resumed.run(progress=False)
    assert resumed.state.iteration == 5 and [h["iteration"] for h in resumed.state.history] == [2, 3, 5]  # an epoch is 2 steps


def test_cli_trains_a_model_folder_and_refuses_a_missing_dataset(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["train-interactive", str(tmp_path / "nope"), "-o", str(tmp_path / "m")])
    assert bad.exit_code == 2 and "dataset folder not found" in bad.output
    result = runner.invoke(app, ["train-interactive", str(shared_dataset("isbi2012_em")), "-o", str(tmp_path / "m"),
                                 "--budget", "3s", "--grid", "64", "--features", "4,8,16", "--batch-size", "2",
                                 "--threads", "1"])
    assert result.exit_code == 0, result.output
    segmenter = load_segmenter(tmp_path / "m")
    assert segmenter.info["train_cases"]["isbi2012_em"][-1] == "em_018"  # 19 of 24 train
    assert segmenter.info["holdout_cases"]["isbi2012_em"][0] == "em_019"
    evaluation = runner.invoke(app, ["eval-interactive", str(shared_dataset("isbi2012_em")), "--model",
                                     str(tmp_path / "m"), "--holdout", "--baselines", "none", "--modes", "clicks",
                                     "--max-interactions", "2", "-o", str(tmp_path / "eval")])
    assert evaluation.exit_code == 0, evaluation.output
    import json

    scored = {case["case_id"] for case in json.loads((tmp_path / "eval" / "interactive.json").read_text())["cases"]}
    assert scored == {"em_019", "em_020", "em_021", "em_022", "em_023"}
    refused = runner.invoke(app, ["eval-interactive", str(shared_dataset("cvc_clinicdb")), "--model",
                                  str(tmp_path / "m"), "--holdout", "--baselines", "none"])
    assert refused.exit_code == 2 and "held out no cases" in refused.output
