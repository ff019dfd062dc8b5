"""Dataset shift: Fréchet distance between feature distributions, per-case Mahalanobis OOD scores, the shift CLI
and the ood.json that medseg predict writes beside a prediction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import mannwhitneyu
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.trust.features import TEXTURE_FEATURE_NAMES, FeatureTable, dataset_features, texture_features
from medseg.trust.shift import (REFERENCE_FILE, dataset_distance, fit_reference, frechet_distance, gaussian,
                                ood_auroc)
from tests.trust.tiny_model import one_line_exit_2, tiny_model_fixture  # noqa: F401  (the session fixture tiny_model)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "isbi2012_em").is_dir(), reason=f"no shared data at {DATA}")


def test_frechet_distance_is_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=4), rng.normal(size=4)
    v1, v2 = rng.uniform(0.5, 2, 4), rng.uniform(0.5, 2, 4)
    expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)  # W2^2 of diagonal Gaussians
    assert frechet_distance(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(m1, np.diag(v1), m1, np.diag(v1)) == pytest.approx(0.0, abs=1e-9)


def test_a_rotated_covariance_gives_the_same_distance():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    a, b = np.diag([1.0, 2.0, 3.0]), np.diag([2.0, 0.5, 1.0])
    plain = frechet_distance(np.zeros(3), a, np.ones(3), b)
    assert frechet_distance(np.zeros(3), q @ a @ q.T, q @ np.ones(3), q @ b @ q.T) == pytest.approx(plain, rel=1e-8)


def test_few_cases_still_give_a_finite_covariance():
    values = np.random.default_rng(2).normal(size=(4, len(TEXTURE_FEATURE_NAMES)))  # 4 cases, 23 features
    _, covariance = gaussian(values)
    assert np.all(np.linalg.eigvalsh(covariance) > 0)  # shrunk: positive definite although N < F


def test_texture_is_unchanged_by_an_intensity_shift_and_first_order_moves():
    image = np.random.default_rng(3).gamma(2.0, 20.0, size=(1, 64, 64))
    names = TEXTURE_FEATURE_NAMES
    plain, shifted = texture_features(image), texture_features(image + 50.0)
    glcm = [i for i, n in enumerate(names) if n.startswith("glcm_")]
    assert np.allclose(plain[glcm], shifted[glcm])
    assert shifted[names.index("mean")] == pytest.approx(plain[names.index("mean")] + 50.0)
    assert shifted[names.index("std")] == pytest.approx(plain[names.index("std")])


@needs_data
def test_distance_to_an_intensity_shifted_copy_grows_with_the_shift():
    cases = [f"em_{i:03d}" for i in range(0, 24, 3)]
    root = DATA / "isbi2012_em"
    reference = dataset_features(root, cases=cases)
    distances = [dataset_distance(reference, dataset_features(root, cases=cases, intensity_shift=s)).distance
                 for s in (0.0, 0.1, 0.3, 1.0)]
    assert distances[0] == pytest.approx(0.0, abs=1e-6)
    assert all(a < b for a, b in zip(distances, distances[1:])), distances


@needs_data
def test_ood_auroc_tells_held_out_montgomery_from_shenzhen_chest_x_rays():
    sites = dict(line.split("\t")[0::2] for line in (DATA / "cxr_lungs" / "cases.tsv").read_text().splitlines()
                 if line.strip())
    montgomery = sorted(c for c, s in sites.items() if s.strip() == "Montgomery")
    shenzhen = sorted(c for c, s in sites.items() if s.strip() == "Shenzhen")
    train, held_out, other = montgomery[0:40:2], montgomery[1:20:2], shenzhen[:10]
    root = DATA / "cxr_lungs"
    reference = fit_reference(dataset_features(root, cases=train))
    inside = reference.distances(dataset_features(root, cases=held_out).values)
    outside = reference.distances(dataset_features(root, cases=other).values)
    auroc = ood_auroc(inside, outside)
    u = mannwhitneyu(outside, inside).statistic  # the peer: AUROC = U / (n_out n_in)
    assert auroc == pytest.approx(u / (len(inside) * len(outside)))
    assert auroc > 0.8, (inside, outside)
    assert np.median(outside) > reference.threshold > np.median(inside)


@pytest.mark.slow
def test_the_cli_compares_two_datasets_and_fits_a_model_reference_that_predict_uses(tiny_model, tmp_path):
    model, dataset = tiny_model
    runner = CliRunner()
    out = tmp_path / "shift.json"
    result = runner.invoke(app, ["shift", str(dataset), str(dataset), "-o", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert written["distance"] == pytest.approx(0.0, abs=1e-6) and written["cases_b"] == 4
    assert set(written["case_scores_b"]) == {"shapes_000", "shapes_001", "shapes_002", "shapes_003"}
    fitted = tmp_path / "model"
    import shutil

    shutil.copytree(model, fitted, ignore=shutil.ignore_patterns("preprocessed"))
    result = runner.invoke(app, ["shift", "--fit", str(fitted), str(dataset), "--features", "encoder"])
    assert result.exit_code == 0, result.output
    assert json.loads((fitted / REFERENCE_FILE).read_text())["feature_set"] == "encoder"
    prediction = tmp_path / "prediction"
    result = runner.invoke(app, ["predict", "-i", str(dataset / "imagesTr"), "-o", str(prediction), "-m",
                                 str(fitted), "--no-tta"])
    assert result.exit_code == 0, result.output
    scores = json.loads((prediction / "ood.json").read_text())["cases"]
    assert set(scores) == {"shapes_000", "shapes_001", "shapes_002", "shapes_003"}
    assert all(np.isfinite(s["mahalanobis"]) and 0 <= s["percentile"] <= 100 for s in scores.values())


def test_encoder_features_ignore_what_the_model_normalises_away_and_see_noise(tiny_model):
    from medseg.nets.from_folder import load_network
    from medseg.config.model_folder import read_segmentation_model
    from medseg.trust.features import encoder_features

    model, dataset = tiny_model
    plain = dataset_features(dataset, feature_set="encoder", model=model)
    shifted = dataset_features(dataset, feature_set="encoder", model=model, intensity_shift=1.0)
    assert plain.values.shape == (4, 128) and np.isfinite(plain.values).all()
    assert np.allclose(plain.values, shifted.values, atol=1e-4)  # z-score normalisation removes an offset
    spec, plan, _ = read_segmentation_model(model)
    network, config = load_network(model, "all", spec=spec), plan.configurations[spec.configuration]
    from medseg.io import read_image

    image = read_image(dataset / "imagesTr" / "shapes_000_0000.nii.gz")
    noisy = image.array + np.random.default_rng(0).normal(0, image.array.std(), image.array.shape)
    a = encoder_features(network, config, image.array, list(image.spacing))
    b = encoder_features(network, config, noisy, list(image.spacing))
    assert np.abs(a - b).max() > 100 * np.abs(plain.values[0] - shifted.values[0]).max()


def test_bad_input_is_one_line_and_exit_2(tiny_model, tmp_path):
    model, dataset = tiny_model
    runner = CliRunner()
    one_line_exit_2(runner.invoke(app, ["shift", str(tmp_path / "missing"), str(dataset)]), "missing")
    one_line_exit_2(runner.invoke(app, ["shift", str(dataset), str(dataset), "--features", "wavelets"]),
                     "--features")
    one_line_exit_2(runner.invoke(app, ["shift", str(dataset), str(dataset), "--features", "encoder"]), "--model")
    one_line_exit_2(runner.invoke(app, ["shift", "--fit", str(dataset), str(dataset)]), "model.json")
    out = tmp_path / "exists.json"
    out.write_text("{}")
    one_line_exit_2(runner.invoke(app, ["shift", str(dataset), str(dataset), "-o", str(out)]), "exists.json")
    broken = tmp_path / "broken_model"
    import shutil

    shutil.copytree(model, broken, ignore=shutil.ignore_patterns("preprocessed"))
    (broken / REFERENCE_FILE).write_text(json.dumps({"feature_set": "texture"}))
    prediction = tmp_path / "prediction"
    result = runner.invoke(app, ["predict", "-i", str(dataset / "imagesTr"), "-o", str(prediction), "-m",
                                 str(broken), "--no-tta"])
    one_line_exit_2(result, REFERENCE_FILE)
    assert not prediction.exists() or not any(prediction.iterdir())  # refused before any label file


def test_a_reference_needs_three_cases():
    table = FeatureTable(["a", "b"], ["x"], np.array([[0.0], [1.0]]), "texture")
    with pytest.raises(Exception, match="3 cases"):
        fit_reference(table)
