"""Training: schedule, splits, atomic checkpoints, and a run killed with SIGKILL that resumes to the same result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medseg.atomic import is_temporary
from medseg.cli.app import app
from medseg.errors import MedsegError
from medseg.training.checkpoint import load_checkpoint, save_checkpoint
from medseg.config.model_folder import available_folds, read_segmentation_model
from medseg.nets.from_folder import load_network
from medseg.training.splits import fold_cases, make_splits
from medseg.training.trainer import poly_learning_rate, schedule_fraction
from tests.training.conftest import tiny_dataset_and_plan


def test_schedule_follows_the_budget_fraction() -> None:
    assert schedule_fraction(30.0, 10, 60.0, 1000) == pytest.approx(0.5)
    assert schedule_fraction(30.0, 900, 60.0, 1000) == pytest.approx(0.9)  # step limit reached first
    assert schedule_fraction(30.0, 10, None, 100) == pytest.approx(0.1)
    assert poly_learning_rate(0.01, 0.0) == 0.01
    assert poly_learning_rate(0.01, 1.0) == 0.0
    assert poly_learning_rate(0.01, 0.5) == pytest.approx(0.01 * 0.5**0.9)


def test_random_splits_partition_the_cases() -> None:
    ids = [f"c{i:02d}" for i in range(23)]
    splits = make_splits(ids, folds=5)
    vals = [set(s["val"]) for s in splits]
    assert set().union(*vals) == set(ids) and sum(len(v) for v in vals) == 23
    for split in splits:
        assert not set(split["train"]) & set(split["val"])
        assert len(split["train"]) + len(split["val"]) == 23
    assert make_splits(ids, folds=5) == splits  # seeded


def test_block_and_group_splits_keep_neighbours_together() -> None:
    ids = [f"frame_{i:03d}" for i in range(20)]
    blocks = make_splits(ids, folds=4, mode="blocks")
    assert blocks[1]["val"] == ids[5:10]
    groups = {case: str(i // 3) for i, case in enumerate(ids)}  # videos of 3 frames
    grouped = make_splits(ids, folds=4, groups=groups)
    for split in grouped:
        val_groups = {groups[c] for c in split["val"]}
        assert not val_groups & {groups[c] for c in split["train"]}
    assert fold_cases(grouped, "all", ids) == (ids, ids)
    with pytest.raises(MedsegError, match="fold 7 does not exist"):
        fold_cases(grouped, 7, ids)


def test_checkpoint_is_atomic_and_never_unpickles(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"network": {"w": torch.ones(3)}, "state": {"iteration": 5}}, path)
    assert load_checkpoint(path)["state"]["iteration"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(MedsegError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")


def _train_command(dataset: Path, plans: Path, model: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "medseg", "train", str(dataset), "-c", "2d", "-f", "0", "-o", str(model),
            "-p", str(plans), "--max-iterations", "24", "--iterations-per-epoch", "4", "--workers", "0",
            "--budget", "600", *extra]


@pytest.mark.slow
def test_sigkill_and_resume_reach_the_uninterrupted_result(tmp_path: Path) -> None:
    dataset, plans = tiny_dataset_and_plan(tmp_path)
    cache = ["--preprocessed", str(tmp_path / "cache")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = subprocess.run(_train_command(dataset, plans, tmp_path / "ref", *cache), capture_output=True,
                               text=True, env=env)
    assert reference.returncode == 0, reference.stderr

    model = tmp_path / "killed"
    checkpoint = model / "fold_0" / "checkpoint.pt"
    kills = 0
    for _ in range(2):  # kill twice, each time after a new checkpoint appeared
        seen = checkpoint.stat().st_mtime_ns if checkpoint.exists() else 0
        extra = ["--resume"] if checkpoint.exists() else []
        process = subprocess.Popen(_train_command(dataset, plans, model, *cache, *extra), env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and process.poll() is None:
            if checkpoint.exists() and checkpoint.stat().st_mtime_ns != seen:
                time.sleep(0.3)
                break
            time.sleep(0.05)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
        state = load_checkpoint(checkpoint)["state"]  # never half-written: it always loads
        assert 0 < state["iteration"] < 24
    assert kills >= 1
    finished = subprocess.run(_train_command(dataset, plans, model, *cache, "--resume"), capture_output=True,
                              text=True, env=env)
    assert finished.returncode == 0, finished.stderr
    assert "resumed" in finished.stdout
    ref_log = json.loads((tmp_path / "ref" / "fold_0" / "training_log.json").read_text())["history"]
    new_log = json.loads((model / "fold_0" / "training_log.json").read_text())["history"]
    assert ref_log[-1]["iteration"] == new_log[-1]["iteration"] == 24
    np.testing.assert_allclose(new_log[-1]["val_dice"], ref_log[-1]["val_dice"], atol=0.02)
    assert not [p for p in model.rglob("*") if is_temporary(p)]  # what the kills left was cleaned on resume
    assert available_folds(model) == ["0"]


@pytest.mark.slow
def test_train_cli_writes_a_loadable_model_folder(tmp_path: Path) -> None:
    dataset, plans = tiny_dataset_and_plan(tmp_path)
    result = CliRunner().invoke(app, ["train", str(dataset), "-c", "2d", "-f", "0", "-o", str(tmp_path / "m"),
                                      "-p", str(plans), "--max-iterations", "10", "--iterations-per-epoch", "5",
                                      "--workers", "0"])
    assert result.exit_code == 0, result.output
    fold = tmp_path / "m" / "fold_0"
    for name in ("weights.safetensors", "checkpoint.pt", "training_log.json", "progress.png", "train_config.json"):
        assert (fold / name).is_file(), name
    run = json.loads((fold / "train_config.json").read_text())
    assert run["precision"] == "float32"  # auto, resolved: a plan given its FLOP/s has no measured bfloat16 gain
    history = json.loads((fold / "training_log.json").read_text())["history"]
    assert all(entry["step_seconds"] > 0 and entry["threads"] >= 1 for entry in history)
    validation = json.loads((fold / "validation.json").read_text())
    for case_id in validation["cases"]:  # the fold's validation cases, predicted in full for find-best
        assert (fold / "validation" / f"{case_id}.nii.gz").is_file()
        assert (fold / "validation" / f"{case_id}.npz").is_file()
    assert set(validation["mean_dice"]) == {"1", "2"}
    info, plan, spec = read_segmentation_model(tmp_path / "m")
    assert info.configuration == "2d" and info.label_values == [0, 1, 2]
    assert info.task == "segmentation" and info.network.name == "plan_unet"
    card = info.card  # the weights card: data, budget, date, version and the fold's held-out figures
    assert card.training_data == ["medseg_shapes"] and card.date and card.medseg_version
    assert card.figures["fold_0"]["steps"] == 10 and card.figures["fold_0"]["validation_dice"] == \
        validation["mean_dice"]
    network = load_network(tmp_path / "m", 0)
    assert network(torch.zeros(1, 1, 32, 32)).shape == (1, 3, 32, 32)
    splits = json.loads((tmp_path / "m" / "splits.json").read_text())
    assert len(splits) == 4 and sorted(splits[0]["train"] + splits[0]["val"]) == sorted(spec and [
        f"shapes_{i:03d}" for i in range(4)])
    again = CliRunner().invoke(app, ["train", str(dataset), "-c", "2d", "-f", "0", "-o", str(tmp_path / "m"),
                                     "-p", str(plans)])
    assert again.exit_code == 2 and "already has a training run" in again.output
