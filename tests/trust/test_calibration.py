"""Temperature and vector scaling fitted on cross-validation probabilities (medseg.trust.calibration, medseg
calibrate), applied by the Predictor, and ECE / Brier / reliability diagrams of probability files (medseg evaluate
--probabilities), cross-checked against scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.config.calibration import CalibrationSpec, read_calibration
from medseg.errors import MedsegError
from medseg.inference import Predictor
from medseg.inference.calibrated import apply_calibration, floored_log
from medseg.inference.ensemble import save_probabilities
from medseg.io import write_image
from medseg.metrics.calibration import expected_calibration_error
from medseg.trust.calibration import fit_scaling, scores
from tests.inference.conftest import make_model_folder
from tests.trust.trust_models import FEATURES, middle_slice, shapes_fixture  # noqa: F401 (fixture)


def overconfident(n: int, k: int = 3, sharpen: float = 3.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from ``softmax(l)`` and a model that reports ``softmax(sharpen * l)``: ``(log p (N, K), y)``."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, k))
    truth = torch.softmax(torch.from_numpy(logits), 1).numpy()
    labels = (rng.random((n, 1)) > truth.cumsum(1)).sum(1)
    reported = torch.softmax(torch.from_numpy(sharpen * logits), 1)
    return floored_log(reported).numpy(), labels


def test_temperature_scaling_undoes_overconfidence():
    z, y = overconfident(20000)
    scale, bias = fit_scaling(z, y, "temperature")
    assert 1 / scale[0] == pytest.approx(3.0, rel=0.08) and np.all(scale == scale[0]) and np.all(bias == 0)
    before, after = scores(z, y, np.ones(3), np.zeros(3)), scores(z, y, scale, bias)
    assert after["nll"] < before["nll"] - 0.1
    assert after["ece"] < before["ece"] / 3 and after["ece"] < 0.02
    assert after["brier"] < before["brier"]
    held_out_z, held_out_y = overconfident(20000, seed=1)  # the fitted T generalises to new voxels
    assert scores(held_out_z, held_out_y, scale, bias)["ece"] < scores(held_out_z, held_out_y, np.ones(3),
                                                                       np.zeros(3))["ece"] / 3
    vector_scale, vector_bias = fit_scaling(z, y, "vector")
    assert scores(z, y, vector_scale, vector_bias)["nll"] <= after["nll"] + 1e-6  # more parameters fit as well


def test_temperature_keeps_the_argmax_and_vector_scaling_can_move_it():
    z, _ = overconfident(500)
    p = torch.from_numpy(np.exp(z)).T[None].float()  # (1, K, N)
    soft = apply_calibration(p, CalibrationSpec("temperature", [0, 1, 2], [0.5] * 3, [0.0] * 3))
    assert torch.equal(soft.argmax(1), p.argmax(1)) and soft.max() < p.max()
    torch.testing.assert_close(soft.sum(1), torch.ones(1, 500))
    shifted = apply_calibration(p, CalibrationSpec("vector", [0, 1, 2], [1.0] * 3, [0.0, 0.0, 50.0]))
    assert bool((shifted.argmax(1) == 2).all())


def test_ece_and_brier_agree_with_scikit_learn():
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss

    z, y = overconfident(5000, seed=2)
    p = np.exp(z).T  # (K, N)
    p /= p.sum(0)
    from medseg.metrics.calibration import brier_score

    for k in range(3):
        assert brier_score(p[k], y == k) == pytest.approx(brier_score_loss(y == k, p[k]), rel=1e-9)
    confidence, correct = p.max(0), p.argmax(0) == y
    accuracy, mean_confidence = calibration_curve(correct, confidence, n_bins=15, strategy="uniform")
    counts = np.histogram(confidence, bins=np.linspace(0, 1, 16))[0]
    sklearn_ece = np.sum(counts[counts > 0] / len(y) * np.abs(accuracy - mean_confidence))
    assert expected_calibration_error(p, y, n_bins=15) == pytest.approx(sklearn_ece, rel=1e-9)


@pytest.fixture()
def model_with_cv(tmp_path, shapes):
    """A two-fold 2d model whose fold_K/validation/<case>.npz are overconfident noisy versions of the labels."""
    from medseg.data import open_dataset

    model = make_model_folder(tmp_path / "model", shapes, "2d", folds=("0", "1"), features=FEATURES)
    data = open_dataset(shapes)
    rng = np.random.default_rng(0)
    for index, case in enumerate(data.cases):
        reference = data.read_label(case).array[0]
        onehot = (reference[None] == np.arange(3).reshape(3, 1, 1, 1)).astype(np.float64)
        logits = 1.5 * onehot + rng.normal(0, 1.2, onehot.shape)
        probabilities = torch.softmax(torch.from_numpy(3.0 * logits), 0).numpy()
        save_probabilities(model / f"fold_{index % 2}" / "validation" / f"{case.case_id}.npz", probabilities, [0, 1, 2])
    return model


def test_medseg_calibrate_stores_a_temperature_that_predict_applies(model_with_cv, shapes):
    result = CliRunner().invoke(app, ["calibrate", str(model_with_cv), "-d", str(shapes), "--max-voxels", "60000"])
    assert result.exit_code == 0, result.output
    spec = read_calibration(model_with_cv, [0, 1, 2])
    assert spec is not None and spec.method == "temperature" and 2.0 < spec.temperature < 4.0
    assert spec.fitted_on["cases"] == 3 and spec.fitted_on["voxels"] == 60000 and spec.fitted_on["folds"] == ["0", "1"]
    assert spec.figures["after"]["nll"] < spec.figures["before"]["nll"]
    assert spec.figures["after"]["ece"] < spec.figures["before"]["ece"]
    assert json.loads((model_with_cv / "calibration.json").read_text())["schema_version"] == 1
    image = middle_slice(shapes)[0]
    calibrated = Predictor.from_folder(model_with_cv)
    plain = Predictor.from_folder(model_with_cv, calibration=None)
    assert calibrated.calibration == spec and plain.calibration is None
    labels, probabilities = calibrated.predict_with_probabilities(image)
    plain_labels, plain_probabilities = plain.predict_with_probabilities(image)
    assert np.array_equal(labels.array, plain_labels.array)  # temperature keeps the argmax
    expected = apply_calibration(torch.from_numpy(plain_probabilities.array), spec, dim=0).numpy()
    inside = probabilities.array[0] < 1  # the content crop (outside: background 1 in both)
    assert inside.any()
    np.testing.assert_allclose(probabilities.array[:, inside], expected[:, inside], atol=2e-3)  # window blend
    vector = CliRunner().invoke(app, ["calibrate", str(model_with_cv), "-d", str(shapes), "--method", "vector",
                                      "--max-voxels", "30000"])
    assert vector.exit_code == 0, vector.output
    assert read_calibration(model_with_cv).method == "vector"


def test_a_model_without_cross_validation_predictions_says_how_to_get_them(tmp_path, shapes):
    model = make_model_folder(tmp_path / "model", shapes, "2d", folds=("all",), features=FEATURES)
    result = CliRunner().invoke(app, ["calibrate", str(model), "-d", str(shapes)])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "no cross-validation predictions" in text and "medseg train DATASET" in text
    assert not (model / "calibration.json").exists()


@pytest.mark.parametrize("breakage, message", [
    ("method", "unknown calibration method"),
    ("dataset", "no case"),
    ("labels", "the model predicts"),
    ("max_voxels", "is not positive"),
    ("not_a_model", "no model.json"),
])
def test_bad_calibration_input_exits_2(breakage, message, model_with_cv, shapes, tmp_path):
    from medseg.synth.shapes import write_shapes_dataset

    args = ["calibrate", str(model_with_cv), "-d", str(shapes)]
    if breakage == "method":
        args += ["--method", "isotonic"]
    elif breakage == "dataset":
        args[3] = str(write_shapes_dataset(tmp_path / "other", num_cases=1, seed=4))  # lacks shapes_001, _002
    elif breakage == "labels":
        save_probabilities(model_with_cv / "fold_0" / "validation" / "shapes_000.npz", np.ones((2, 4, 4, 4)) / 2,
                           [0, 1])
    elif breakage == "max_voxels":
        args += ["--max-voxels", "0"]
    else:
        args[1] = str(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "fix:" in result.output
    assert not (model_with_cv / "calibration.json").exists()


def test_a_malformed_calibration_file_stops_predict(model_with_cv, shapes, tmp_path):
    (model_with_cv / "calibration.json").write_text(json.dumps({"method": "temperature", "scale": [1.0]}))
    with pytest.raises(MedsegError, match="calibration.json is incomplete"):
        Predictor.from_folder(model_with_cv)
    image = write_image(middle_slice(shapes)[0], tmp_path / "in" / "x_0000.nii.gz")
    result = CliRunner().invoke(app, ["predict", "-i", str(image), "-o", str(tmp_path / "out"), "-m",
                                      str(model_with_cv)])
    assert result.exit_code == 2 and "calibration.json" in result.output


def _probability_folders(tmp_path, shapes):
    """Two cases' labels and overconfident probabilities (``(prob dir, ref dir)``) and their pooled arrays."""
    from medseg.data import open_dataset

    data = open_dataset(shapes)
    rng = np.random.default_rng(1)
    ref_dir, prob_dir = tmp_path / "ref", tmp_path / "prob"
    pooled_p, pooled_y = [], []
    for case in data.cases[:2]:
        label = data.read_label(case)
        reference = label.array[0]
        onehot = (reference[None] == np.arange(3).reshape(3, 1, 1, 1)).astype(np.float64)
        p = torch.softmax(torch.from_numpy(3.0 * (1.5 * onehot + rng.normal(0, 1.2, onehot.shape))), 0).numpy()
        write_image(label, ref_dir / f"{case.case_id}.nii.gz")
        save_probabilities(prob_dir / f"{case.case_id}.npz", p, [0, 1, 2])
        pooled_p.append(p.astype(np.float16).astype(np.float32).reshape(3, -1))  # as stored
        pooled_y.append(reference.ravel())
    return prob_dir, ref_dir, np.concatenate(pooled_p, 1), np.concatenate(pooled_y)


def test_evaluate_probabilities_reports_pooled_ece_brier_and_diagrams(tmp_path, shapes):
    from sklearn.metrics import brier_score_loss

    prob_dir, ref_dir, p, y = _probability_folders(tmp_path, shapes)
    out = tmp_path / "eval"
    for path in ref_dir.iterdir():  # labels beside the probabilities, as medseg predict --save-probabilities writes
        (prob_dir / path.name).write_bytes(path.read_bytes())
    result = CliRunner().invoke(app, ["evaluate", str(prob_dir), str(ref_dir), "-o", str(out), "--probabilities",
                                      str(prob_dir), "--labels", "1,2", "--workers", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "calibration.json").read_text())
    assert report["cases"] == 2 and report["voxels"] == y.size
    for k in range(3):
        name = next(n for n, v in report["classes"].items() if v["label"] == k)
        assert report["classes"][name]["brier"] == pytest.approx(brier_score_loss(y == k, p[k]), rel=1e-6)
        assert report["classes"][name]["ece"] == pytest.approx(expected_calibration_error(p[k], y == k), rel=1e-6)
        assert (out / "plots" / f"reliability_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["top_label"]["ece"] == pytest.approx(expected_calibration_error(p, y), rel=1e-6)
    assert report["top_label"]["ece"] > 0.05  # overconfident: visible
    metrics = (out / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 1 + 2 * 2 and all(",1.0," in row for row in metrics[1:])  # labels vs themselves


@pytest.mark.parametrize("breakage, message", [("empty", "no <case>.npz"), ("missing", "has no probability file"),
                                               ("shape", "for a reference of shape")])
def test_bad_probability_folders_exit_2(breakage, message, tmp_path, shapes):
    prob_dir, ref_dir, _, _ = _probability_folders(tmp_path, shapes)
    files = sorted(prob_dir.glob("*.npz"))
    if breakage == "empty":
        for path in files:
            path.unlink()
    elif breakage == "missing":
        files[0].unlink()
    else:
        save_probabilities(files[0], np.ones((3, 4, 4, 4)) / 3, [0, 1, 2])
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", str(ref_dir), str(ref_dir), "-o", str(out), "--probabilities",
                                      str(prob_dir), "--labels", "1,2", "--workers", "1"])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "fix:" in result.output
    assert not (out / "calibration.json").exists()


@pytest.mark.slow
def test_train_with_dropout_calibrate_and_predict_with_mc_dropout(tmp_path):
    """End to end on a model trained for seconds: --set net.dropout reaches the network, medseg calibrate fits on
    what medseg train stored, medseg predict applies the calibration and samples MC dropout."""
    from medseg.config.model_folder import read_model_spec
    from tests.training.conftest import tiny_dataset_and_plan

    dataset, plans = tiny_dataset_and_plan(tmp_path)
    model = tmp_path / "model"
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(dataset), "-c", "2d", "-f", "0", "-o", str(model), "-p", str(plans),
                                 "--max-iterations", "10", "--iterations-per-epoch", "5", "--workers", "0",
                                 "--set", "net.dropout=0.2"])  # fold 0 predicts its validation case
    assert result.exit_code == 0, result.output
    assert read_model_spec(model).network.options["dropout"] == 0.2
    result = runner.invoke(app, ["calibrate", str(model), "-d", str(dataset)])
    assert result.exit_code == 0, result.output
    spec = read_calibration(model)
    assert spec.fitted_on["folds"] == ["0"] and spec.figures["after"]["nll"] <= spec.figures["before"]["nll"]
    image = next((dataset / "imagesTr").iterdir())
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", "-i", str(image), "-o", str(out), "-m", str(model), "--uncertainty",
                                 "mcdropout", "--mc-samples", "3", "--no-tta"])
    assert result.exit_code == 0, result.output
    case = image.name.removesuffix("_0000.nii.gz")
    summary = json.loads((out / "uncertainty" / f"{case}.json").read_text())
    assert summary["method"] == "mcdropout" and summary["members"] == 3
    from medseg.io import read_image

    assert read_image(out / "uncertainty" / f"{case}_mutual_information.nii.gz").array.max() > 0  # samples differ
