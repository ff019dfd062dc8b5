"""`medseg incontext` and `medseg train-incontext`: outputs in the target's geometry, and every bad input one
line naming the file, exit code 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.incontext import model as incontext_model
from medseg.incontext.model import save_incontext_model
from medseg.io import Image, read_image, write_image
from medseg.nets.incontext_unet import InContextConfig, InContextUNet


def _disc(shape, centre, radius):
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius**2


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("incontext") / "model"
    save_incontext_model(InContextUNet(InContextConfig(features=[4, 8], grid=[32, 32], stochastic=True)), folder)
    return folder


def _support_2d(folder: Path, count: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for i in range(count):
        write_image(Image.from_array((rng.random((40, 40)) * 255).astype(np.uint8)), folder / "images" / f"s{i}.png")
        write_image(Image.from_array(_disc((40, 40), (20, 20), 8).astype(np.uint8)), folder / "masks" / f"s{i}.png")
    return folder


def _run(*args: str):
    return CliRunner().invoke(app, list(map(str, args)))


def _one_line(result, culprit: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and culprit in lines[0] and "fix:" in lines[0] and "Traceback" not in result.output, \
        result.output
    return lines[0]


def test_a_2d_target_gets_mask_candidates_and_spread_in_its_format(tmp_path, model):
    support = _support_2d(tmp_path / "support")
    target = write_image(Image.from_array((np.random.default_rng(1).random((30, 50)) * 255).astype(np.uint8)),
                         tmp_path / "target.png")
    result = _run("incontext", "--support", support, "--target", target, "--model", model, "--candidates", "3",
                  "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["candidate_1.png", "candidate_2.png", "candidate_3.png",
                                                     "incontext.json", "mask.png", "spread.png"]
    assert read_image(out / "mask.png").spatial_shape == (30, 50)
    assert set(np.unique(read_image(out / "candidate_2.png").array)) <= {0, 1}
    assert json.loads((out / "incontext.json").read_text())["candidates"] == 3


def test_a_3d_target_keeps_its_geometry(tmp_path, model):
    geometry = {"spacing": (2.0, 0.8, 0.8), "origin": (5.0, -3.0, 1.0)}
    structure = np.zeros((8, 24, 24), np.uint8)
    structure[2:6] = _disc((24, 24), (12, 12), 6)
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write_image(Image.from_array(rng.random((8, 24, 24)).astype(np.float32), **geometry),
                    tmp_path / "support" / "imagesTr" / f"{name}_0000.nii.gz")
        write_image(Image.from_array(structure, **geometry), tmp_path / "support" / "labelsTr" / f"{name}.nii.gz")
    target = write_image(Image.from_array(rng.random((10, 20, 22)).astype(np.float32), spacing=(3.0, 1.0, 1.0),
                                          origin=(1.0, 2.0, 3.0)), tmp_path / "target.nii.gz")
    result = _run("incontext", "-s", tmp_path / "support", "-t", target, "-m", model, "-k", "2", "--nearest",
                  "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    mask = read_image(tmp_path / "out" / "mask.nii.gz")
    assert mask.same_grid(read_image(target))


def test_bad_support_inputs_are_one_line_each_and_write_nothing(tmp_path, model):
    target = write_image(Image.from_array(np.zeros((40, 40), np.uint8)), tmp_path / "target.png")
    cases = {}
    shifted = _support_2d(tmp_path / "grid")
    write_image(Image.from_array(_disc((30, 40), (15, 20), 5).astype(np.uint8)), shifted / "masks" / "s1.png")
    cases["grid"] = (shifted, "s1.png", "different grid")
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    cases["empty"] = (empty, "empty", "support set is empty")
    blank = _support_2d(tmp_path / "blank")
    write_image(Image.from_array(np.zeros((40, 40), np.uint8)), blank / "masks" / "s0.png")
    cases["blank"] = (blank, "s0.png", "no foreground")
    volume = tmp_path / "volume"
    write_image(Image.from_array(np.random.default_rng(0).random((4, 40, 40)).astype(np.float32)),
                volume / "images" / "v.nii.gz")
    write_image(Image.from_array(np.broadcast_to(_disc((40, 40), (20, 20), 8), (4, 40, 40)).astype(np.uint8)),
                volume / "masks" / "v.nii.gz")
    cases["3d for 2d"] = (volume, "volume", "3D support set for a 2D target")
    for name, (support, culprit, message) in cases.items():
        out = tmp_path / f"out_{name.replace(' ', '_')}"
        line = _one_line(_run("incontext", "--support", support, "--target", target, "--model", model, "-o", out),
                         culprit)
        assert message in line, (name, line)
        assert not out.exists() and not list(tmp_path.glob(f".{out.name}*"))


def test_without_a_model_or_shipped_weights_the_error_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(incontext_model, "SHIPPED", tmp_path / "no_weights")
    support = _support_2d(tmp_path / "support")
    target = write_image(Image.from_array(np.zeros((40, 40), np.uint8)), tmp_path / "target.png")
    line = _one_line(_run("incontext", "--support", support, "--target", target, "-o", tmp_path / "out"),
                     "no_weights")
    assert "--model" in line and "train-incontext" in line


def test_train_incontext_refuses_a_missing_dataset_and_an_unknown_exclusion(tmp_path):
    from tests.conftest import shared_dataset

    _one_line(_run("train-incontext", tmp_path / "nope", "-o", tmp_path / "m"), "nope")
    line = _one_line(_run("train-incontext", shared_dataset("isbi2012_em"), "--exclude", "isbi", "-o",
                          tmp_path / "m"), "--exclude isbi")
    assert "matches none" in line and not (tmp_path / "m" / "model.json").exists()
