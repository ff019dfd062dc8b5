"""``medseg predict`` and ``medseg find-best`` end to end on tiny model folders; user errors exit 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.inference import Predictor
from medseg.inference.ensemble import load_probabilities
from medseg.io import Image, read_image, write_image


def _invoke(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medseg", *[str(a) for a in args]], capture_output=True, text=True)


def test_predict_a_folder_with_probabilities(tmp_path: Path, shapes_dataset: Path, shapes_model: Path) -> None:
    images = tmp_path / "in"
    images.mkdir()
    for path in sorted((shapes_dataset / "imagesTr").iterdir())[:2]:
        image = read_image(path)  # a smaller volume keeps the test fast
        write_image(Image(image.array[:, :12], image.spacing, image.origin, image.direction), images / path.name)
    out = tmp_path / "out"
    result = _invoke("predict", "-i", images, "-o", out, "-m", shapes_model, "-f", "0", "--no-tta",
                     "--save-probabilities")
    assert "wrote 2 label file(s)" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["shapes_000.nii.gz", "shapes_000.npz", "shapes_001.nii.gz",
                                                     "shapes_001.npz"]
    image = read_image(images / "shapes_000_0000.nii.gz")
    labels = read_image(out / "shapes_000.nii.gz")
    assert labels.same_grid(image, tolerance=1e-6)
    expected = Predictor.from_folder(shapes_model, folds=["0"], tta=False).predict(image)
    np.testing.assert_array_equal(labels.array, expected.array)
    probabilities, values = load_probabilities(out / "shapes_000.npz")
    assert values == [0, 1, 2] and probabilities.shape == (3, 12, 64, 64)
    agree = np.mean(np.asarray(values)[probabilities.argmax(0)] == labels.array[0])
    assert agree > 0.99  # float16 storage may flip near-ties


def test_predict_a_dataset_folder_and_a_single_file_with_2d_model(tmp_path: Path, shapes_dataset: Path,
                                                                  shapes_model_2d: Path) -> None:
    out = tmp_path / "out"
    _invoke("predict", "-i", shapes_dataset, "-o", out, "-m", shapes_model_2d, "--no-tta")
    assert sorted(p.name for p in out.iterdir()) == [f"shapes_00{i}.nii.gz" for i in range(3)]
    single = tmp_path / "single"
    _invoke("predict", "-i", shapes_dataset / "imagesTr" / "shapes_001_0000.nii.gz", "-o", single, "-m",
            shapes_model_2d, "--no-tta")
    np.testing.assert_array_equal(read_image(single / "shapes_001.nii.gz").array,
                                  read_image(out / "shapes_001.nii.gz").array)


def test_missing_model_exits_2_without_output(tmp_path: Path, shapes_dataset: Path) -> None:
    result = _run_cli("predict", "-i", shapes_dataset, "-o", tmp_path / "out", "-m", tmp_path / "no_model")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert "model folder not found" in result.stderr
    assert not (tmp_path / "out").exists()


def test_wrong_channel_count_exits_2_without_output(tmp_path: Path, shapes_dataset: Path, shapes_model: Path) -> None:
    images = tmp_path / "in"
    images.mkdir()
    source = shapes_dataset / "imagesTr" / "shapes_000_0000.nii.gz"
    shutil.copy(source, images / "case_0000.nii.gz")
    shutil.copy(source, images / "case_0001.nii.gz")
    result = _run_cli("predict", "-i", images, "-o", tmp_path / "out", "-m", shapes_model, "--no-tta")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the image has 2 channel(s), the model expects 1" in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unknown_suffix_exits_2_without_output(tmp_path: Path, shapes_model: Path) -> None:
    images = tmp_path / "in"
    images.mkdir()
    (images / "scan.foo").write_bytes(b"not an image")
    result = _run_cli("predict", "-i", images, "-o", tmp_path / "out", "-m", shapes_model)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unknown image file type '.foo'" in result.stderr and "scan.foo" in result.stderr
    assert not (tmp_path / "out").exists()


def _validation_model(folder: Path, source: Path, dataset: Path, predictions: dict[str, np.ndarray]) -> Path:
    """Copy ``source`` model folder and write fold validation label maps + one-hot probabilities."""
    from medseg.inference.ensemble import save_probabilities

    shutil.copytree(source, folder)
    for index, (case, labels) in enumerate(sorted(predictions.items())):
        reference = read_image(dataset / "labelsTr" / f"{case}.nii.gz")
        validation = folder / f"fold_{index % 2}" / "validation"
        write_image(reference.with_array(labels[None].astype(np.uint8)), validation / f"{case}.nii.gz")
        save_probabilities(validation / f"{case}.npz", np.stack([labels == v for v in (0, 1, 2)]).astype(np.float32),
                           [0, 1, 2])
    return folder


def test_find_best_picks_the_better_model_and_decides_postprocessing(tmp_path: Path, shapes_dataset: Path,
                                                                     shapes_model: Path) -> None:
    good, bad = {}, {}
    for path in sorted((shapes_dataset / "labelsTr").iterdir()):
        reference = read_image(path).array[0]
        with_blob = reference.copy()
        with_blob[0:2, 0:3, 0:3] = 1  # a small false-positive island of class 1, far from the organ
        good[path.name[:-7]] = with_blob
        worse = reference.copy()
        worse[worse == 2] = 1  # misses the lesion
        bad[path.name[:-7]] = worse
    model_good = _validation_model(tmp_path / "good", shapes_model, shapes_dataset, good)
    model_bad = _validation_model(tmp_path / "bad", shapes_model, shapes_dataset, bad)
    result_file = tmp_path / "find_best.json"
    output = _invoke("find-best", model_good, model_bad, "-d", shapes_dataset, "-o", result_file).output
    assert "best: good" in output and "good+bad" in output
    result = json.loads(result_file.read_text())
    names = [c["name"] for c in result["candidates"]]
    assert names[0] == "good" and set(names) == {"good", "bad", "good+bad"}
    assert result["best"]["dice_per_class"]["2"] == pytest.approx(1.0)
    assert result["best"]["dice_per_class"]["1"] < 1.0
    decision = json.loads((model_good / "postprocessing.json").read_text())
    assert decision["keep_largest_component"] == [1]  # the island goes; the lesion (already perfect) is left alone
    assert decision["dice_after"]["1"] == pytest.approx(1.0)


def test_find_best_without_validation_predictions_exits_2(tmp_path: Path, shapes_dataset: Path,
                                                          shapes_model: Path) -> None:
    result = CliRunner().invoke(app, ["find-best", str(shapes_model), "-d", str(shapes_dataset), "-o",
                                      str(tmp_path / "fb.json")])
    assert result.exit_code == 2
    assert not (tmp_path / "fb.json").exists()
