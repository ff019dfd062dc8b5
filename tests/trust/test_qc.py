"""Label-free quality control: the per-case features, the ridge fit and its leave-one-out evidence, the stored
model that ``medseg predict`` applies, ``medseg qc``'s review list, and its bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.errors import MedsegError
from medseg.inference.ensemble import save_probabilities
from medseg.trust.qc import FEATURES, MIN_CASES, case_dice, case_features, fit_from_cases, read_quality_model
from tests.inference.conftest import make_model_folder
from tests.trust.tiny_model import one_line_exit_2
from tests.trust.trust_models import FEATURES as NET_FEATURES


def _disc(shape=(48, 48), radius=12.0) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return ((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 < radius ** 2).astype(np.int64)


def _noisy_probabilities(reference: np.ndarray, noise: float, rng, classes: int = 2) -> np.ndarray:
    """Softmax of one-hot logits plus Gaussian noise: more noise, more flipped voxels and less confidence."""
    onehot = (reference[None] == np.arange(classes).reshape(-1, *[1] * reference.ndim)).astype(np.float64)
    logits = 1.5 * onehot + rng.normal(0, noise, onehot.shape)
    return torch.softmax(torch.from_numpy(3.0 * logits), 0).numpy()


def test_a_confident_right_prediction_expects_its_dice_and_a_smeared_one_does_not():
    reference = _disc()
    confident = np.stack([1.0 - reference, reference]).astype(np.float32) * 0.999 + 0.0005
    features = case_features(confident, [0, 1])
    assert features["expected_dice"] == pytest.approx(1.0, abs=2e-3)  # the 0.0005 mass outside counts a little
    assert features["uncertain_fraction"] == 0.0 and features["boundary_entropy"] < 0.02
    smeared = _noisy_probabilities(reference, 1.5, np.random.default_rng(0))
    worse = case_features(smeared, [0, 1])
    assert worse["expected_dice"] < features["expected_dice"] - 0.05 and worse["uncertain_fraction"] > 0.1
    assert worse["boundary_entropy"] > features["boundary_entropy"]
    empty = np.stack([np.ones((8, 8)), np.zeros((8, 8))]).astype(np.float32)
    assert case_features(empty, [0, 1])["expected_dice"] == 1.0  # nothing predicted, nothing expected


def test_case_dice_is_medseg_metrics_dice_over_the_foreground_labels():
    reference = np.zeros((10, 10), dtype=np.uint8)
    reference[2:6, 2:6], reference[7:9, 7:9] = 1, 2
    labels = reference.copy()
    labels[2:6, 2:4] = 0  # label 1: 8 of 16 voxels found -> Dice 2*8/(8+16)
    assert case_dice(labels, reference, [0, 1, 2]) == pytest.approx((16 / 24 + 1.0) / 2)


def test_the_fit_ranks_cases_by_their_dice_and_says_how_well_it_did():
    rng = np.random.default_rng(1)
    reference = _disc()
    features, dice = [], []
    for noise in np.linspace(0.3, 2.2, 16):
        p = _noisy_probabilities(reference, noise, rng)
        features.append(case_features(p, [0, 1]))
        dice.append(case_dice(p.argmax(0), reference, [0, 1]))
    quality = fit_from_cases(features, dice, fitted_on="constructed")
    assert quality.cases == 16 and quality.loo_spearman > 0.8 and quality.loo_mae < 0.1
    predicted = [quality.predict(f) for f in features]
    assert all(0.0 <= value <= 1.0 for value in predicted)
    assert np.corrcoef(predicted, dice)[0, 1] > 0.9
    with pytest.raises(MedsegError, match=f"fewer than {MIN_CASES}"):
        fit_from_cases(features[:MIN_CASES - 1], dice[:MIN_CASES - 1])
    with pytest.raises(MedsegError, match=f"fewer than {MIN_CASES}"):  # NaN Dice cases do not count
        fit_from_cases(features[:MIN_CASES], [float("nan")] + dice[1:MIN_CASES])


@pytest.fixture(scope="module")
def qc_data(tmp_path_factory):
    from medseg.synth.shapes import write_shapes_dataset

    return write_shapes_dataset(tmp_path_factory.mktemp("qc_data") / "shapes", num_cases=10, seed=3)


@pytest.fixture()
def model_with_cv(tmp_path, qc_data):
    """A two-fold 2d model whose fold_K/validation/<case>.npz are noisy versions of the labels, each case with
    its own noise level (so the cases' Dice spread and the probabilities say so)."""
    from medseg.data import open_dataset

    model = make_model_folder(tmp_path / "model", qc_data, "2d", folds=("0", "1"), features=NET_FEATURES)
    data = open_dataset(qc_data)
    rng = np.random.default_rng(0)
    for index, (case, noise) in enumerate(zip(data.cases, np.linspace(0.4, 2.4, len(data.cases)))):
        reference = data.read_label(case).array[0]
        probabilities = _noisy_probabilities(reference, noise, rng, classes=3)
        save_probabilities(model / f"fold_{index % 2}" / "validation" / f"{case.case_id}.npz", probabilities,
                           [0, 1, 2])
    return model


def test_qc_fit_then_predict_writes_scores_that_qc_lists_worst_first(model_with_cv, qc_data, tmp_path):
    runner = CliRunner()
    fitted = runner.invoke(app, ["qc", str(model_with_cv), "--fit", "-d", str(qc_data), "-o",
                                 str(tmp_path / "fit.json")])
    assert fitted.exit_code == 0, fitted.output
    assert "10 cross-validation cases" in fitted.output and "leave-one-out Spearman" in fitted.output
    quality = read_quality_model(model_with_cv)
    assert quality.cases == 10 and quality.loo_spearman > 0.6  # noisier cases: lower Dice, and the fit sees it
    record = json.loads((tmp_path / "fit.json").read_text())
    assert sorted(record["cases"]) == sorted(f"shapes_{i:03d}" for i in range(10))
    images = tmp_path / "images"
    images.mkdir()
    for case in ("shapes_000", "shapes_001"):
        (images / f"{case}_0000.nii.gz").symlink_to(qc_data / "imagesTr" / f"{case}_0000.nii.gz")
    out = tmp_path / "predictions"
    predicted = runner.invoke(app, ["predict", "-i", str(images), "-o", str(out), "-m", str(model_with_cv),
                                    "--no-tta"])
    assert predicted.exit_code == 0, predicted.output
    scores = {p.stem: json.loads(p.read_text()) for p in (out / "qc").glob("*.json")}
    assert sorted(scores) == ["shapes_000", "shapes_001"]
    for score in scores.values():
        assert 0.0 <= score["predicted_dice"] <= 1.0
        assert score["failure_score"] == pytest.approx(1.0 - score["predicted_dice"])
        assert sorted(score["features"]) == sorted(FEATURES)
    listed = runner.invoke(app, ["qc", str(out), "--top", "1"])
    assert listed.exit_code == 0, listed.output
    worst = min(scores, key=lambda case: (-scores[case]["failure_score"], case))  # ties: by case id
    rows = [line for line in listed.output.splitlines() if line.strip().startswith("1 ")]
    assert len(rows) == 1 and worst in rows[0] and len(listed.output.strip().splitlines()) == 2


def test_a_model_without_cv_predictions_says_how_to_get_them(tmp_path, qc_data):
    model = make_model_folder(tmp_path / "model", qc_data, "2d", features=NET_FEATURES)
    result = CliRunner().invoke(app, ["qc", str(model), "--fit", "-d", str(qc_data)])
    one_line_exit_2(result, "no cross-validation predictions")
    assert "medseg train DATASET" in result.output and not (model / "qc.json").exists()


@pytest.mark.parametrize("arguments, needle", [
    (["{model}", "--fit"], "--fit needs the dataset"),
    (["{predictions}", "-d", "{data}"], "--dataset is for --fit"),
    (["{predictions}"], "no quality scores"),
    (["{missing}"], "prediction folder not found"),
    (["{predictions}", "--top", "0"], "--top 0 is not positive"),
    (["{data}", "--fit", "-d", "{data}"], "no model.json"),
])
def test_bad_qc_input_exits_2(arguments, needle, tmp_path, qc_data):
    model = make_model_folder(tmp_path / "model", qc_data, "2d", features=NET_FEATURES)
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    names = {"model": model, "predictions": predictions, "data": qc_data, "missing": tmp_path / "nowhere"}
    result = CliRunner().invoke(app, ["qc", *[a.format(**names) for a in arguments]])
    one_line_exit_2(result, needle)
