"""Largest-component post-processing and its cross-validation decision; 2D prediction on real PNG data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.inference.postprocess import decide_postprocessing, keep_largest_component
from medseg.io import read_image

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def test_keep_largest_component_per_class() -> None:
    labels = np.zeros((6, 10, 10), dtype=np.uint8)
    labels[0:3, 0:4, 0:4] = 1  # 48 voxels
    labels[5, 8, 8] = 1  # an island
    labels[4:6, 0:2, 6:9] = 2  # 12 voxels
    labels[0, 9, 0] = 2
    out = keep_largest_component(labels, [1])
    assert out[5, 8, 8] == 0 and (out == 1).sum() == 48
    assert (out == 2).sum() == 13  # class 2 untouched
    both = keep_largest_component(labels, [1, 2])
    assert (both == 2).sum() == 12 and both[0, 9, 0] == 0
    diagonal = np.zeros((4, 4), dtype=np.uint8)
    diagonal[0, 0] = diagonal[1, 1] = 1  # 8-connected in 2D: one component
    assert (keep_largest_component(diagonal, [1]) == 1).sum() == 2
    assert labels[5, 8, 8] == 1  # input not modified


def test_decision_keeps_only_classes_that_improve() -> None:
    reference = np.zeros((8, 16, 16), dtype=np.uint8)
    reference[2:6, 2:8, 2:8] = 1
    reference[2:6, 10:14, 10:14] = 2
    reference[0, 0, 15] = 2  # a real second component of class 2: filtering would remove it
    prediction = reference.copy()
    prediction[7, 15, 0] = 1  # a false island of class 1
    decision = decide_postprocessing([(prediction, reference)], [1, 2])
    assert decision["keep_largest_component"] == [1]
    assert decision["dice_after"]["1"] > decision["dice_before"]["1"]
    assert decision["dice_after"]["2"] < decision["dice_before"]["2"]
    assert decision["num_cases"] == 1


def test_predict_2d_png_cases_of_real_data(tmp_path: Path, model_factory) -> None:
    source = SHARED_DATA / "isbi2012_em"
    if not (source / "dataset.json").is_file():
        pytest.skip(f"real-data battery not found at {source}")
    dataset = tmp_path / "isbi"
    (dataset / "imagesTr").mkdir(parents=True)
    (dataset / "labelsTr").mkdir()
    spec = json.loads((source / "dataset.json").read_text())
    spec["numTraining"] = 2
    (dataset / "dataset.json").write_text(json.dumps(spec))
    for case in ("em_000", "em_001"):
        (dataset / "imagesTr" / f"{case}_0000.png").symlink_to(source / "imagesTr" / f"{case}_0000.png")
        (dataset / "labelsTr" / f"{case}.png").symlink_to(source / "labelsTr" / f"{case}.png")
    model = model_factory(tmp_path / "model", dataset, "2d", features=[4, 8, 8, 8, 8, 8, 8, 8])
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["predict", "-i", str(dataset / "imagesTr"), "-o", str(out), "-m", str(model),
                                      "--no-tta"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["em_000.png", "em_001.png"]
    labels = read_image(out / "em_000.png")
    image = read_image(source / "imagesTr" / "em_000_0000.png")
    assert labels.spatial_shape == image.spatial_shape == (512, 512)
    assert set(np.unique(labels.array)) <= {0, 1}
