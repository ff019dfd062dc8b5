"""The cascade end to end on a tiny 3D dataset: 3d_lowres folds, 3d_cascade_fullres trained on their
cross-validation predictions, find-best beside both, and `medseg predict` running the two stages."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.config import Plan, read_json
from medseg.data import cache
from medseg.data.layout import open_dataset
from medseg.errors import MedsegError
from medseg.inference import Predictor
from medseg.io import read_image
from medseg.preprocess.previous_stage import previous_stage_channels
from medseg.preprocess.resample import new_shape, resample_label
from medseg.training.service import train_fold

SHORT = {"max_iterations": 4, "iterations_per_epoch": 2, "num_workers": 0}


def cascade_plan(tmp_path: Path) -> tuple[Path, Path]:
    """``medseg example-data`` (3 cases: 3 folds) and a plan with 3d_lowres and 3d_cascade_fullres added by hand:
    the example volumes are too small for the planner to want a cascade (its patch covers 31% of them)."""
    runner = CliRunner()
    dataset = tmp_path / "shapes"
    assert runner.invoke(app, ["example-data", str(dataset), "--cases", "3"]).exit_code == 0
    plans = tmp_path / "plans.json"
    result = runner.invoke(app, ["plan", str(dataset), "-o", str(plans), "--flops", "1e10", "--budget", "60"])
    assert result.exit_code == 0, result.output
    raw = read_json(plans)
    fullres = raw["configurations"]["3d_fullres"]
    lowres = copy.deepcopy(fullres)
    lowres.update(name="3d_lowres", target_spacing=[s * f for s, f in zip(fullres["target_spacing"], [1, 1.5, 1.5])])
    cascade = copy.deepcopy(fullres)
    cascade.update(name="3d_cascade_fullres", previous_stage="3d_lowres")  # in_channels: the trainer adds them
    raw["configurations"].update({"3d_lowres": lowres, "3d_cascade_fullres": cascade})
    plans.write_text(json.dumps(raw))
    Plan.from_dict(read_json(plans), path=plans)
    return dataset, plans


@pytest.mark.slow
def test_cascade_trains_on_lowres_cross_validation_and_predicts_both_stages(tmp_path: Path) -> None:
    dataset, plans = cascade_plan(tmp_path)
    lowres, cascade_dir = tmp_path / "lowres", tmp_path / "cascade"
    runner = CliRunner()

    def train_cascade(fold: str, model: Path = cascade_dir):
        return runner.invoke(app, ["train", str(dataset), "-c", "3d_cascade_fullres", "-f", fold, "-o", str(model),
                                   "-p", str(plans), "--max-iterations", "4", "--iterations-per-epoch", "2",
                                   "--workers", "0", "--previous-stage", str(lowres)])

    for fold in ("0", "1"):
        train_fold(dataset, "3d_lowres", fold, model_dir=lowres, plans=plans, train_config=SHORT, progress=False)
    early = train_cascade("0")  # fold 2 of the first stage is missing: one of the cases has no CV prediction
    assert early.exit_code == 2 and "no cross-validation prediction" in early.output, early.output
    assert not (cascade_dir / "fold_0").exists()
    train_fold(dataset, "3d_lowres", "2", model_dir=lowres, plans=plans, train_config=SHORT, progress=False)

    result = train_cascade("0")
    assert result.exit_code == 0, result.output
    assert read_json(cascade_dir / "splits.json") == read_json(lowres / "splits.json")  # the first stage's folds
    spec = read_json(cascade_dir / "model.json")
    assert spec["configuration"] == "3d_cascade_fullres"
    assert spec["network"]["in_channels"] == 1 + 2  # the image + one channel per foreground label (1, 2)
    assert (cascade_dir / spec["extra"]["previous_stage"]["model"]).resolve() == lowres.resolve()

    # the cache holds the image and the first stage's CV prediction, cropped and resampled like a label map
    data = open_dataset(dataset)
    case = data.cases[0]
    cached = cache.read_case(cascade_dir / "preprocessed" / "3d_cascade_fullres", case.case_id)
    assert cached.data.shape[0] == 3
    previous = read_image(next((lowres).glob(f"fold_*/validation/{case.case_id}.nii.gz"))).array
    props = cached.properties
    expected = previous_stage_channels(previous, props["crop_bbox"], props["shape_after_resample"], [1, 2])
    np.testing.assert_array_equal(cached.data[1:], expected)
    assert set(np.unique(cached.data[1:])) <= {0.0, 1.0}
    cropped = previous[(slice(None),) + tuple(slice(a, b) for a, b in props["crop_bbox"])]
    shape = new_shape(cropped.shape[1:], props["spacing"], props["target_spacing"])
    np.testing.assert_array_equal(expected[1] > 0, resample_label(cropped, shape)[0] == 2)

    # fold 0's validation case was predicted with its first-stage CV prediction; find-best weighs the cascade
    val_case = read_json(lowres / "splits.json")[0]["val"][0]
    assert (cascade_dir / "fold_0" / "validation" / f"{val_case}.nii.gz").is_file()
    best = runner.invoke(app, ["find-best", str(lowres), str(cascade_dir), "-d", str(dataset), "-o",
                               str(tmp_path / "find_best.json")])
    assert best.exit_code == 0, best.output
    names = [c["name"] for c in read_json(tmp_path / "find_best.json")["candidates"]]
    assert {"lowres", "cascade", "lowres+cascade"} <= set(names)

    # predict runs both stages; given the first stage's labels it gives the same result
    predictor = Predictor.from_folder(cascade_dir)
    assert predictor.previous_stage is not None and predictor.previous_stage.config.name == "3d_lowres"
    image = data.read_image(case)
    first = predictor.previous_stage.predict(image)
    labels = predictor.predict(image)
    assert labels.spatial_shape == image.spatial_shape
    np.testing.assert_array_equal(predictor.predict(image, previous=first.array).array, labels.array)
    out = tmp_path / "predicted"
    done = runner.invoke(app, ["predict", "-i", str(dataset / "imagesTr" / f"{case.case_id}_0000.nii.gz"),
                               "-o", str(out), "-m", str(cascade_dir)])
    assert done.exit_code == 0, done.output
    np.testing.assert_array_equal(read_image(out / f"{case.case_id}.nii.gz").array, labels.array)

    # the two folders move together; without the first stage the cascade says what is missing
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(str(lowres), moved / "lowres")
    shutil.move(str(cascade_dir), moved / "cascade")
    assert Predictor.from_folder(moved / "cascade").previous_stage is not None
    shutil.rmtree(moved / "lowres")
    with pytest.raises(MedsegError, match="first-stage model folder is missing"):
        Predictor.from_folder(moved / "cascade")


def test_previous_stage_must_be_the_first_stage_of_a_cascade(tmp_path: Path) -> None:
    dataset, plans = cascade_plan(tmp_path)
    with pytest.raises(MedsegError, match="trains on the 3d_lowres stage's cross-validation predictions"):
        train_fold(dataset, "3d_cascade_fullres", "0", model_dir=tmp_path / "c", plans=plans, train_config=SHORT)
    with pytest.raises(MedsegError, match="has no previous stage"):
        train_fold(dataset, "3d_fullres", "0", model_dir=tmp_path / "f", plans=plans, train_config=SHORT,
                   previous_stage=tmp_path)
    with pytest.raises(MedsegError, match="not a medseg model folder"):
        train_fold(dataset, "3d_cascade_fullres", "0", model_dir=tmp_path / "c", plans=plans, train_config=SHORT,
                   previous_stage=tmp_path)
    assert not (tmp_path / "c").exists() and not (tmp_path / "f").exists()


def test_preprocess_of_a_cascade_asks_for_the_first_stage(tmp_path: Path) -> None:
    dataset, plans = cascade_plan(tmp_path)
    result = CliRunner().invoke(app, ["preprocess", str(dataset), "-c", "3d_cascade_fullres", "-p", str(plans),
                                      "-o", str(tmp_path / "cache")])
    assert result.exit_code == 2 and "--previous-stage" in result.output, result.output
    assert not (tmp_path / "cache").exists()
    wrong = CliRunner().invoke(app, ["preprocess", str(dataset), "-c", "3d_fullres", "-p", str(plans),
                                     "-o", str(tmp_path / "cache"), "--previous-stage", str(tmp_path)])
    assert wrong.exit_code == 2 and "has no previous stage" in wrong.output, wrong.output
