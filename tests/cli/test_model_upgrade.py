"""`medseg model upgrade`: old interactive folders (interactive.json + model.safetensors, as medseg wrote them before
the one model-folder contract) and schema-1 segmentation folders become current folders that load and predict as
before; damaged weights are refused, a second run changes nothing, an interrupted run can be finished."""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.config import model_upgrade
from medseg.config.model_folder import read_model_spec
from medseg.errors import MedsegError
from medseg.interactive.predictor import PromptableSegmenter, load_segmenter
from medseg.interactive.prompts import Click, PromptSet
from medseg.interactive.slices import SliceBank
from medseg.nets.promptable_unet import PromptableConfig, PromptableUNet

TINY = [4, 8]
GRID = [32, 32]
OLD_TRAIN_CONFIG = {"budget_seconds": 60.0, "max_steps": None, "batch_size": 2, "learning_rate": 2e-3,
                    "weight_decay": 1e-4, "max_corrections": 4,
                    "mode_weights": {"clicks": 0.4, "box": 0.2, "scribbles": 0.2, "box+clicks": 0.2},
                    "box_jitter": 0.1, "click_tolerance": 0.5, "validate_every": 2, "checkpoint_seconds": 60.0,
                    "seed": 0, "device": "cpu", "threads": 1}
OLD_HISTORY = [{"step": 2, "elapsed": 0.6, "lr": 1.5e-3, "train_loss": 0.91, "dice_1_clicks": 0.31,
                "dice_5_clicks": 0.42},
               {"step": 3, "elapsed": 0.9, "lr": 0.0, "train_loss": 0.88, "dice_1_clicks": 0.33, "dice_5_clicks": 0.45}]


def run_cli(*args: str):
    return CliRunner().invoke(app, ["model", "upgrade", *map(str, args)])


def write_old_interactive(folder: Path, *, record_hash: bool = True, seed: int = 0) -> PromptableUNet:
    """An interactive model folder exactly as medseg's old ``save_model`` and ``InteractiveTrainer`` wrote it:
    ``model.safetensors``, ``interactive.json`` (with ``weights_sha256`` unless ``record_hash`` is False, as
    before hashes were recorded), an old-format ``checkpoint.pt``, ``training_log.json`` and ``progress.png``."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    net = PromptableUNet(PromptableConfig(features=TINY, grid=GRID))
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    net(torch.rand(1, 3, *GRID), torch.zeros(1, 6, *GRID)).mean().backward()
    optimizer.step()  # an optimiser state with moments, as after training
    net.eval()
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"))
    info = {"kind": "medseg-interactive", "schema_version": 1, "network": net.config.to_dict(),
            "datasets": ["/data/cvc_clinicdb", "/data/isbi2012_em"], "train_fraction": 0.8,
            "train_cases": {"cvc_clinicdb": ["c0", "c1"], "isbi2012_em": ["e0"]},
            "holdout_cases": {"cvc_clinicdb": ["c2"], "isbi2012_em": ["e1"]}, "train_slices": 5,
            "train_config": OLD_TRAIN_CONFIG, "steps": 3, "train_seconds": 0.9, "history": OLD_HISTORY}
    if record_hash:
        info["weights_sha256"] = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    (folder / "interactive.json").write_text(json.dumps(info, indent=2))
    torch.save({"network": net.state_dict(), "optimizer": optimizer.state_dict(), "step": 3, "elapsed": 0.9,
                "history": OLD_HISTORY}, folder / "checkpoint.pt")
    (folder / "training_log.json").write_text(json.dumps({"history": OLD_HISTORY}))
    (folder / "progress.png").write_bytes(b"\x89PNG\r\n\x1a\n old curves")
    return net


def probabilities(segmenter, image: np.ndarray) -> np.ndarray:
    return segmenter.predict(segmenter.embed(image), PromptSet([Click((20, 30)), Click((5, 6), positive=False)]))


IMAGE = np.random.default_rng(1).random((3, 45, 60)).astype(np.float32)


def assert_current_interactive(folder: Path, net: PromptableUNet) -> None:
    """The folder is of the current layout and its model gives exactly the old network's probabilities."""
    assert sorted(p.name for p in folder.iterdir()) == ["fold_all", "model.json"]
    assert sorted(p.name for p in (folder / "fold_all").iterdir()) == [
        "checkpoint.pt", "progress.png", "train_config.json", "training_log.json", "weights.json",
        "weights.safetensors"]
    segmenter = load_segmenter(folder)
    np.testing.assert_array_equal(probabilities(segmenter, IMAGE), probabilities(PromptableSegmenter(net), IMAGE))


def test_old_interactive_folder_upgrades_and_predicts_the_same(tmp_path):
    folder = tmp_path / "interactive_model"
    net = write_old_interactive(folder)
    weights_date = datetime.datetime.fromtimestamp((folder / "model.safetensors").stat().st_mtime,
                                                   datetime.timezone.utc).replace(microsecond=0).isoformat()
    with pytest.raises(MedsegError, match=f"medseg model upgrade {folder}"):
        load_segmenter(folder)
    result = run_cli(folder)
    assert result.exit_code == 0, result.output
    assert "fold_all/weights.safetensors (sha256 verified)" in result.output
    assert "checkpoint.pt -> fold_all/checkpoint.pt" in result.output and "interactive.json removed" in result.output
    assert_current_interactive(folder, net)
    spec = read_model_spec(folder)
    assert spec.task == "interactive" and spec.network.name == "promptable_unet" and spec.label_values == [0, 1]
    assert spec.network.in_channels == 3 and spec.network.options == {"features": TINY, "fusion": "decoder",
                                                                      "output_stride": 1, "norm": "instance",
                                                                      "grid": GRID}
    card = spec.card
    assert card.training_data == ["cvc_clinicdb", "isbi2012_em"] and card.training_cases == 3
    assert (card.steps, card.train_seconds, card.budget_seconds) == (3, 0.9, 60.0)
    assert card.figures == {"holdout_slices": {"dice_1_clicks": 0.33, "dice_5_clicks": 0.45}}
    assert card.medseg_version == "unknown (before 0.2)" and card.date == weights_date
    assert spec.extra["train_cases"] == {"cvc_clinicdb": ["c0", "c1"], "isbi2012_em": ["e0"]}
    assert spec.extra["train_slices"] == 5 and "history" not in spec.extra
    log = json.loads((folder / "fold_all" / "training_log.json").read_text())
    assert [(h["epoch"], h["iteration"]) for h in log["history"]] == [(1, 2), (2, 3)]
    config = json.loads((folder / "fold_all" / "train_config.json").read_text())
    assert config["task"] == "interactive" and config["iterations_per_epoch"] == 2
    assert config["task_options"]["batch_size"] == 2
    assert (folder / "fold_all" / "progress.png").read_bytes().endswith(b"old curves")

    again = run_cli(folder)
    assert again.exit_code == 0 and again.output.strip() == f"{folder}: already current"


def _disc_bank(count: int = 6) -> SliceBank:
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[: GRID[0], : GRID[1]]
    targets = np.stack([np.hypot(rows - rng.uniform(10, 22), cols - rng.uniform(10, 22)) <= 6 for _ in range(count)])
    images = np.repeat((0.2 + 0.6 * targets + rng.normal(0, 0.05, targets.shape)).clip(0, 1)[:, None], 3, axis=1)
    return SliceBank(torch.tensor(images, dtype=torch.float16), torch.tensor(targets), np.zeros(count, int),
                     [f"synthetic/{i}" for i in range(count)], ["synthetic"])


def test_training_resumes_from_the_converted_checkpoint(tmp_path):
    from medseg.interactive.training import interactive_train_config, interactive_trainer

    folder = tmp_path / "model"
    net = write_old_interactive(folder)
    assert run_cli(folder).exit_code == 0
    config = interactive_train_config(budget_seconds=None, max_iterations=5, batch_size=2, validate_every=2,
                                      threads=1)
    trainer = interactive_trainer(_disc_bank(), folder, config=config, network_config=PromptableConfig(features=TINY))
    assert trainer.resume()
    assert (trainer.state.iteration, trainer.state.epoch, trainer.state.elapsed) == (3, 2, 0.9)
    for name, tensor in net.state_dict().items():
        torch.testing.assert_close(trainer.network.state_dict()[name], tensor, rtol=0, atol=0)
    trainer.run(progress=False)
    assert trainer.state.iteration == 5 and [h["iteration"] for h in trainer.state.history] == [2, 3, 5]
    assert load_segmenter(folder).info["steps"] == 5


def test_folder_without_a_recorded_hash_says_the_hash_is_new(tmp_path):
    folder = tmp_path / "model"
    net = write_old_interactive(folder, record_hash=False)
    result = run_cli(folder)
    assert result.exit_code == 0, result.output
    assert "sha256 recorded for the existing weights (unverified before)" in result.output
    assert_current_interactive(folder, net)


def test_tampered_old_weights_are_refused_and_the_folder_is_left_alone(tmp_path):
    folder = tmp_path / "model"
    write_old_interactive(folder)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # tensor bytes: the header still parses, only the hash can tell
    weights.write_bytes(bytes(data))
    before = sorted(p.name for p in folder.iterdir())
    result = run_cli(folder)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "damaged" in result.output and "model.safetensors" in result.output
    assert sorted(p.name for p in folder.iterdir()) == before


@pytest.mark.parametrize("stop_in", ["_convert_checkpoint", "_finish_interactive"])
def test_an_interrupted_upgrade_leaves_a_loadable_or_upgradable_folder_and_finishes(tmp_path, monkeypatch, stop_in):
    folder = tmp_path / "model"
    net = write_old_interactive(folder)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as a kill between two steps: nothing of the step runs

    with monkeypatch.context() as patch:
        patch.setattr(model_upgrade, stop_in, killed)
        with pytest.raises(KeyboardInterrupt):
            model_upgrade.upgrade_model_folder(folder)
    assert (folder / "fold_all" / "weights.safetensors").is_file() and not (folder / "model.safetensors").exists()
    if stop_in == "_convert_checkpoint":  # weights moved, no model.json: still the old layout, with the message
        with pytest.raises(MedsegError, match="medseg model upgrade"):
            load_segmenter(folder)
    else:  # model.json written, interactive.json not yet removed: already the new layout
        np.testing.assert_array_equal(probabilities(load_segmenter(folder), IMAGE),
                                      probabilities(PromptableSegmenter(net), IMAGE))
    result = run_cli(folder)
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("interactive.json removed")
    assert_current_interactive(folder, net)


def test_folders_of_neither_kind_are_refused(tmp_path):
    result = run_cli(tmp_path)
    assert result.exit_code == 2 and str(tmp_path) in result.output and "not a medseg model folder" in result.output
    folder = tmp_path / "both"
    write_old_interactive(folder)
    (folder / "model.json").write_text(json.dumps({"schema_version": 2, "task": "interactive", "label_values": [0, 1],
                                                   "network": {"name": "promptable_unet", "spatial_dims": 2,
                                                               "in_channels": 3, "num_classes": 1}}))
    result = run_cli(folder)
    assert result.exit_code == 2 and "both a model.json and an old interactive.json" in result.output
    assert (folder / "model.safetensors").is_file()


# ---------------------------------------------------------------------------------------- schema-1 segmentation
@pytest.fixture(scope="module")
def shapes_dataset(tmp_path_factory) -> Path:
    from medseg.synth.shapes import write_shapes_dataset

    return write_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", num_cases=3)


def write_schema1_segmentation(folder: Path, dataset: Path) -> dict:
    """A segmentation folder as ``medseg train`` wrote it before the contract: model.json of schema 1 (the
    PlanUNet arguments as ``network``), fold_0 with weights but no weights.json, its log and validation Dice."""
    from tests.inference.conftest import make_model_folder

    make_model_folder(folder, dataset, "2d", features=[4, 8, 16, 16, 16])
    current = json.loads((folder / "model.json").read_text())
    network = current["network"]
    old = {"schema_version": 1, "configuration": "2d", "label_values": current["label_values"],
           "network": {"spatial_dims": network["spatial_dims"], "in_channels": network["in_channels"],
                       "num_classes": network["num_classes"], **network["options"]}}
    (folder / "model.json").write_text(json.dumps(old))
    fold = folder / "fold_0"
    (fold / "training_log.json").write_text(json.dumps({
        "history": [{"epoch": 1, "iteration": 50, "elapsed": 12.5, "train_loss": 0.7, "val_dice": [0.4, 0.5],
                     "lr": 0.004}], "max_iterations": 1000, "budget_seconds": 90.0}))
    (fold / "cases.json").write_text(json.dumps({"train": ["shapes_000", "shapes_001"], "val": ["shapes_002"]}))
    (fold / "validation.json").write_text(json.dumps({"mean_dice": {"1": 0.41, "2": 0.52}, "cases": ["shapes_002"]}))
    return old


def test_schema1_segmentation_folder_upgrades_and_predicts_identically(tmp_path, shapes_dataset):
    from medseg.data import open_dataset
    from medseg.inference import Predictor

    folder = tmp_path / "seg"
    old = write_schema1_segmentation(folder, shapes_dataset)
    data = open_dataset(shapes_dataset)
    image = data.read_image(data.cases[0])
    labels_before, probabilities_before = Predictor.from_folder(folder, tta=False).predict_with_probabilities(image)
    result = run_cli(folder)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == f"{folder}: fold_0: sha256 recorded for the existing weights (unverified before)"
    assert "schema 1 -> 2" in lines[1] and len(lines) == 2
    raw = json.loads((folder / "model.json").read_text())
    assert raw["schema_version"] == 2 and raw["network"]["name"] == "plan_unet" and raw["configuration"] == "2d"
    assert raw["network"]["options"]["features_per_stage"] == old["network"]["features_per_stage"]
    card = raw["card"]
    assert card["training_data"] == [data.spec.name] and card["budget_seconds"] is not None
    assert card["figures"]["fold_0"] == {"steps": 50, "train_seconds": 12.5, "train_cases": 2,
                                         "validation_dice": {"1": 0.41, "2": 0.52}}
    assert card["steps"] == 50 and card["medseg_version"] == "unknown (before 0.2)"
    record = json.loads((folder / "fold_0" / "weights.json").read_text())
    assert record["sha256"] == hashlib.sha256((folder / "fold_0" / "weights.safetensors").read_bytes()).hexdigest()
    labels_after, probabilities_after = Predictor.from_folder(folder, tta=False).predict_with_probabilities(image)
    np.testing.assert_array_equal(labels_after.array, labels_before.array)
    np.testing.assert_array_equal(probabilities_after.array, probabilities_before.array)
    again = run_cli(folder)
    assert again.exit_code == 0 and again.output.strip() == f"{folder}: already current"
    (folder / "fold_0" / "weights.json").unlink()  # a current folder whose fold was killed before its record
    recorded = run_cli(folder)
    assert recorded.exit_code == 0
    assert recorded.output.strip() == f"{folder}: fold_0: sha256 recorded for the existing weights (unverified before)"
