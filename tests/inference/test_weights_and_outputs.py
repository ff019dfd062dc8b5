"""Weights are verified at load, outputs never destroy inputs, arguments and output folders are checked before any
work (issue 16): each bad case ends with exit code 2 and one line naming the file, and nothing is written."""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.errors import MedsegError
from medseg.inference import Predictor
from medseg.io import Image, read_image, write_image
from medseg.config.model_folder import WEIGHTS_RECORD, write_fold_weights
from medseg.weights_file import load_weights, save_weights, sha256_file


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medseg", *[str(a) for a in args]], capture_output=True, text=True)


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_error_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("error:") and "Traceback" not in text, text
    return lines[0]


def _flip_tensor_bytes(path: Path) -> None:
    """Overwrite 64 bytes in the middle of the tensor data; the safetensors header stays intact."""
    data = bytearray(path.read_bytes())
    start = 8 + struct.unpack("<Q", bytes(data[:8]))[0]
    middle = start + (len(data) - start) // 2
    data[middle:middle + 64] = bytes(b ^ 0x5A for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


# Each command that writes, with OUT as its output (DS: a dataset, MODEL: a model folder for it).
WRITING_COMMANDS = {
    "plan": lambda ds, out, model: ["plan", ds, "-o", out / "plans.json"],
    "fingerprint": lambda ds, out, model: ["fingerprint", ds, "-o", out / "fingerprint.json"],
    "preprocess": lambda ds, out, model: ["preprocess", ds, "-c", "2d", "-o", out],
    "train": lambda ds, out, model: ["train", ds, "-c", "2d", "-f", "0", "-o", out],
    "predict": lambda ds, out, model: ["predict", "-i", ds / "imagesTr", "-o", out, "-m", model, "--no-tta"],
    "evaluate": lambda ds, out, model: ["evaluate", ds / "labelsTr", ds / "labelsTr", "-o", out],
    "convert": lambda ds, out, model: ["convert", ds, out],
    "train-interactive": lambda ds, out, model: ["train-interactive", ds, "-o", out, "--budget", "1s"],
    "eval-interactive": lambda ds, out, model: ["eval-interactive", ds, "--baselines", "watershed", "--cases", "1",
                                                "-o", out],
}


@pytest.fixture
def images(tmp_path: Path, shapes_dataset: Path) -> Path:
    """Two cases cut to 12 slices (fast to predict), in a plain folder."""
    folder = tmp_path / "in"
    folder.mkdir()
    for path in sorted((shapes_dataset / "imagesTr").iterdir())[:2]:
        image = read_image(path)
        write_image(Image(image.array[:, :12], image.spacing, image.origin, image.direction), folder / path.name)
    return folder


@pytest.fixture
def hashed_model(tmp_path: Path, shapes_model: Path) -> Path:
    """A copy of the tiny 3D model whose fold 0 is written as training writes it (weights + weights.json)."""
    model = tmp_path / "model"
    shutil.copytree(shapes_model, model)
    weights = model / "fold_0" / "weights.safetensors"
    write_fold_weights(model / "fold_0", load_weights(weights, None))
    return model


def test_weights_record_matches_the_file_and_loads_silently(hashed_model: Path, caplog) -> None:
    record = json.loads((hashed_model / "fold_0" / WEIGHTS_RECORD).read_text())
    assert record["sha256"] == sha256_file(hashed_model / "fold_0" / "weights.safetensors")
    with caplog.at_level(logging.WARNING, logger="medseg.weights_file"):
        Predictor.from_folder(hashed_model, folds=["0"], tta=False)
    assert not caplog.records


def test_truncated_weights_exit_2_one_line(tmp_path: Path, images: Path, hashed_model: Path,
                                          shapes_model: Path) -> None:
    for model in (hashed_model, tmp_path / "old"):
        if model != hashed_model:  # a folder from before weights.json: safetensors' own error, as one line
            shutil.copytree(shapes_model, model)
        weights = model / "fold_0" / "weights.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        result = _cli("predict", "-i", images, "-o", tmp_path / "out", "-m", model, "-f", "0", "--no-tta")
        assert result.returncode == 2, result.stderr
        line = _one_error_line(result.stderr)
        assert str(weights) in line and "retrain the fold or restore the file" in line
        assert not (tmp_path / "out").exists()


def test_flipped_tensor_bytes_exit_2_naming_the_file(tmp_path: Path, images: Path, hashed_model: Path) -> None:
    from safetensors.torch import load_file

    weights = hashed_model / "fold_0" / "weights.safetensors"
    _flip_tensor_bytes(weights)
    load_file(str(weights))  # safetensors alone accepts the damaged file: only the sha256 catches it
    result = _cli("predict", "-i", images, "-o", tmp_path / "out", "-m", hashed_model, "-f", "0", "--no-tta")
    assert result.returncode == 2, result.stderr
    line = _one_error_line(result.stderr)
    assert str(weights) in line and "sha256" in line and "retrain the fold or restore the file" in line
    assert not (tmp_path / "out").exists()


def test_old_folder_without_hash_loads_with_a_warning(shapes_model: Path, caplog) -> None:
    assert not (shapes_model / "fold_0" / WEIGHTS_RECORD).exists()
    with caplog.at_level(logging.WARNING, logger="medseg.weights_file"):
        predictor = Predictor.from_folder(shapes_model, folds=["0"], tta=False)
    assert predictor is not None
    assert any("no sha256 recorded" in r.getMessage() for r in caplog.records)


def test_a_rewritten_fold_never_pairs_new_weights_with_an_old_hash(hashed_model: Path) -> None:
    fold = hashed_model / "fold_0"
    old = json.loads((fold / WEIGHTS_RECORD).read_text())["sha256"]
    torch.manual_seed(7)
    state = {k: torch.randn_like(v) for k, v in load_weights(fold / "weights.safetensors", old).items()}
    write_fold_weights(fold, state)
    new = json.loads((fold / WEIGHTS_RECORD).read_text())["sha256"]
    assert new != old and new == sha256_file(fold / "weights.safetensors")
    assert save_weights(state, fold.parent / "again.safetensors") == new  # the same tensors, the same bytes


def test_interactive_model_weights_are_verified(tmp_path: Path, shapes_dataset: Path, caplog) -> None:
    from medseg.interactive.predictor import load_segmenter, save_model
    from medseg.nets.promptable_unet import PromptableConfig, PromptableUNet

    folder = save_model(PromptableUNet(PromptableConfig(features=[4, 8, 16], grid=[32, 32])), tmp_path / "im")
    fold = folder / "fold_all"
    assert json.loads((fold / WEIGHTS_RECORD).read_text())["sha256"] == sha256_file(fold / "weights.safetensors")
    load_segmenter(folder)
    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    _flip_tensor_bytes(damaged / "fold_all" / "weights.safetensors")
    with pytest.raises(MedsegError, match="sha256"):
        load_segmenter(damaged)
    old = tmp_path / "old"  # written before the hash was recorded
    shutil.copytree(folder, old)
    (old / "fold_all" / WEIGHTS_RECORD).unlink()
    with caplog.at_level(logging.WARNING, logger="medseg.weights_file"):
        load_segmenter(old)
    assert any("no sha256 recorded" in r.getMessage() for r in caplog.records)
    WEIGHTS = "fold_all/weights.safetensors"
    (folder / WEIGHTS).write_bytes((folder / WEIGHTS).read_bytes()[:1000])
    result = _cli("eval-interactive", shapes_dataset, "--model", folder, "--baselines", "none", "--cases", "1",
                  "-o", tmp_path / "ieval")
    assert result.returncode == 2, result.stderr
    assert str(folder / WEIGHTS) in _one_error_line(result.stderr)


def test_predict_into_the_dataset_labels_is_refused(tmp_path: Path, shapes_dataset: Path,
                                                   shapes_model: Path) -> None:
    dataset = tmp_path / "dataset"
    shutil.copytree(shapes_dataset, dataset)
    before = {p.name: p.read_bytes() for p in (dataset / "labelsTr").iterdir()}
    for output in (dataset / "labelsTr", dataset / "predictions", dataset / "imagesTr"):
        result = _invoke("predict", "-i", dataset / "imagesTr", "-o", output, "-m", shapes_model, "-f", "0",
                         "--no-tta")
        assert result.exit_code == 2, result.output
        assert "inside the dataset" in _one_error_line(result.output)
    assert {p.name: p.read_bytes() for p in (dataset / "labelsTr").iterdir()} == before
    assert not (dataset / "predictions").exists()
    for command in ("evaluate", "eval-interactive", "train"):
        result = _invoke(*WRITING_COMMANDS[command](dataset, dataset / "out", shapes_model))
        assert result.exit_code == 2 and "inside the dataset" in _one_error_line(result.output), command
    assert not (dataset / "out").exists()


def test_predict_into_the_folder_of_its_input_file_is_refused(tmp_path: Path, images: Path,
                                                             shapes_model: Path) -> None:
    single = images / "shapes_000_0000.nii.gz"
    before = single.read_bytes()
    result = _invoke("predict", "-i", single, "-o", images, "-m", shapes_model, "-f", "0", "--no-tta")
    assert result.exit_code == 2 and "input folder" in _one_error_line(result.output)
    assert single.read_bytes() == before and len(list(images.iterdir())) == 2


def test_existing_output_is_kept_without_overwrite(tmp_path: Path, images: Path, shapes_model: Path) -> None:
    out = tmp_path / "out"
    args = ["predict", "-i", images, "-o", out, "-m", shapes_model, "-f", "0", "--no-tta"]
    assert _invoke(*args).exit_code == 0
    label = out / "shapes_000.nii.gz"
    label.write_bytes(b"the user's own file")
    refused = _invoke(*args)
    assert refused.exit_code == 2, refused.output
    line = _one_error_line(refused.output)
    assert "shapes_000.nii.gz" in line and "--overwrite" in line
    assert label.read_bytes() == b"the user's own file"
    assert _invoke(*args, "--overwrite").exit_code == 0
    assert read_image(label).array.shape == (1, 12, 64, 64)


def test_one_unreadable_input_stops_before_any_file_is_written(tmp_path: Path, images: Path,
                                                              hashed_model: Path) -> None:
    bad = images / "zzz_0000.nii.gz"  # sorted last: the good cases would be written first
    bad.write_bytes(b"\x1f\x8b" + os.urandom(300))
    out = tmp_path / "out"
    result = _cli("predict", "-i", images, "-o", out, "-m", hashed_model, "-f", "0", "--no-tta")
    assert result.returncode == 2, result.stderr
    assert str(bad) in _one_error_line(result.stderr)
    assert not out.exists() or not any(out.iterdir())


def test_train_with_a_missing_fold_fails_at_once(tmp_path: Path, shapes_dataset: Path) -> None:
    model = tmp_path / "model"
    for options, message in ((["-f", "7"], "fold '7' does not exist"), (["-f", "x"], "fold 'x' does not exist"),
                             (["-c", "4d"], "unknown configuration '4d'"),
                             (["--budget", "-5"], "budget must be positive")):
        arguments = {"-c": "2d", "-f": "0", **dict(zip(options[::2], options[1::2]))}
        started = time.perf_counter()
        result = _invoke("train", shapes_dataset, "-o", model, *[x for kv in arguments.items() for x in kv])
        seconds = time.perf_counter() - started
        assert result.exit_code == 2, result.output
        assert message in _one_error_line(result.output)
        assert seconds < 0.5, seconds
        assert not model.exists()


def _unwritable_outputs(tmp_path: Path) -> list[Path]:
    """Output folders nobody can write: under a regular file (fails for root too), and a 0500 folder when the
    permission bits stop this user (they do not stop root)."""
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    outputs = [blocker / "sub"]
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        (locked / "probe").touch()
        (locked / "probe").unlink()  # root: chmod does not stop writes, so this case cannot be made here
    except PermissionError:
        outputs.append(locked / "out")
    return outputs


@pytest.mark.parametrize("command", sorted(WRITING_COMMANDS))
def test_unwritable_output_is_one_line(command: str, tmp_path: Path, shapes_dataset: Path,
                                       shapes_model: Path) -> None:
    for out in _unwritable_outputs(tmp_path):
        result = _invoke(*WRITING_COMMANDS[command](shapes_dataset, out, shapes_model))
        assert result.exit_code == 2, (command, out, result.output)
        line = _one_error_line(result.output)
        assert str(out) in line and ("not writable" in line or "is a file" in line), line
        assert not out.exists()
    (tmp_path / "locked").chmod(0o700)


def test_output_checks_on_find_best_and_convert(tmp_path: Path, shapes_dataset: Path, shapes_model: Path) -> None:
    existing = tmp_path / "find_best.json"
    existing.write_text("{}")
    result = _invoke("find-best", shapes_model, "-d", shapes_dataset, "-o", existing)
    assert result.exit_code == 2 and "--overwrite" in _one_error_line(result.output)
    assert existing.read_text() == "{}"
    taken = tmp_path / "taken"
    taken.mkdir()
    result = _invoke("convert", shapes_dataset, taken)
    assert result.exit_code == 2 and "exists" in _one_error_line(result.output)
