"""``medseg evaluate`` on small synthetic folders: case pairing, label discovery, regions, errors (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.errors import MedsegError


def _write(folder: Path, name: str, array: np.ndarray, spacing=(2.0, 1.0, 1.0)) -> None:
    from medseg.io import Image, write_image

    folder.mkdir(parents=True, exist_ok=True)
    write_image(Image.from_array(array, spacing=spacing), folder / name)


def _folders(tmp_path: Path, n: int = 3) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    for i in range(n):
        ref = np.zeros((6, 16, 16), np.uint8)
        ref[1:5, 3:10, 3:10] = 1
        ref[2:4, 11:14, 11:14] = 2
        pred = ref.copy()
        pred[rng.random(ref.shape) < 0.05] = 0
        _write(tmp_path / "ref", f"case_{i}.nii.gz", ref)
        _write(tmp_path / "pred", f"case_{i}.nii.gz", pred)
    return tmp_path / "pred", tmp_path / "ref"


def _run(*args: str):
    from medseg.cli.app import app

    return CliRunner().invoke(app, ["evaluate", *map(str, args)])


def test_labels_default_to_the_values_found_in_the_references(tmp_path):
    pred, ref = _folders(tmp_path)
    result = _run(pred, ref, "-o", tmp_path / "out", "--workers", "1")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["classes"] == {"1": [1], "2": [2]} and summary["cases"] == 3
    assert summary["options"]["hd95_definition"] == "max" and summary["options"]["surface_mode"] == "voxel"
    stats = summary["metrics"]["1"]["dice"]
    assert set(stats) == {"mean", "sd", "median", "ci_low", "ci_high", "n", "n_finite", "n_nan", "n_inf"}


def test_python_api_with_regions_and_dataset_json_names(tmp_path):
    from medseg.evaluation import evaluate
    from medseg.metrics import MetricOptions

    pred, ref = _folders(tmp_path, 2)
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1, "tumour": 2}}))
    named = evaluate(pred, ref, tmp_path / "a", dataset_json=tmp_path / "dataset.json", plots=False, workers=1,
                     options=MetricOptions(metrics=("dice",)))
    assert {r["class"] for r in named.rows} == {"liver", "tumour"}
    regions = evaluate(pred, ref, tmp_path / "b", regions="all=1,2;small=2", plots=False, workers=2,
                       options=MetricOptions(metrics=("dice", "nsd")))
    assert [(r["case"], r["class"]) for r in regions.rows] == [
        ("case_0", "all"), ("case_0", "small"), ("case_1", "all"), ("case_1", "small")]


@pytest.mark.parametrize("problem, message", [
    ("missing", "reference case 'case_2' has no prediction"),
    ("extra", "prediction case 'case_9' has no reference"),
    ("spacing", "does not match the grid of reference case_1.nii.gz: spacing"),
    ("shape", "does not match the grid of reference case_1.nii.gz: shape"),
    ("regions", "cannot read region"),
    ("metric", "unknown metric"),
    ("float", "not a label map"),
])
def test_mismatches_exit_2_with_one_clear_line(tmp_path, problem, message):
    pred, ref = _folders(tmp_path)
    args = [pred, ref, "-o", tmp_path / "out", "--workers", "2"]
    if problem == "missing":
        (pred / "case_2.nii.gz").unlink()
    elif problem == "extra":
        _write(pred, "case_9.nii.gz", np.zeros((6, 16, 16), np.uint8))
    elif problem == "spacing":
        _write(pred, "case_1.nii.gz", np.zeros((6, 16, 16), np.uint8), spacing=(3.0, 1.0, 1.0))
    elif problem == "shape":
        _write(pred, "case_1.nii.gz", np.zeros((6, 16, 15), np.uint8))
    elif problem == "regions":
        args += ["--regions", "whole:1,2"]
    elif problem == "metric":
        args += ["--metrics", "dice,hd99"]
    elif problem == "float":
        _write(pred, "case_1.nii.gz", np.full((6, 16, 16), 0.5, np.float32))
    result = _run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "metrics.csv").exists(), "no output after an error"


def test_case_ids_strip_image_suffixes_and_duplicates_are_errors(tmp_path):
    from medseg.evaluation.cases import list_cases, parse_regions

    _write(tmp_path / "f", "a_001.nii.gz", np.zeros((2, 3, 3), np.uint8))
    _write(tmp_path / "f", "b.nrrd", np.zeros((2, 3, 3), np.uint8))
    (tmp_path / "f" / "notes.txt").write_text("ignored")
    assert list(list_cases(tmp_path / "f", "reference")) == ["a_001", "b"]
    _write(tmp_path / "f", "b.mha", np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(MedsegError, match="two files for case 'b'"):
        list_cases(tmp_path / "f", "reference")
    assert parse_regions("wt=1,2,3,4; tc=1,3,4", tmp_path) == {"wt": (1, 2, 3, 4), "tc": (1, 3, 4)}
    with pytest.raises(MedsegError, match="no dataset.json"):
        parse_regions("dataset", tmp_path / "f")


def test_cli_module_imports_only_typer():
    code = ("import sys, medseg.cli.evaluate; heavy = [m for m in ('numpy', 'scipy', 'medseg.metrics', "
            "'medseg.evaluation', 'matplotlib') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
