"""Uncertainty maps from folds, mirrored copies and MC dropout (medseg.trust.uncertainty, medseg predict
--uncertainty): bounds, geometry, agreement with the plain prediction, dropout only where it exists, atomic files
and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.errors import MedsegError
from medseg.inference import Predictor
from medseg.io import read_image
from medseg.trust.uncertainty import (MAPS, UncertaintyPredictor, dropout_active, dropout_layers, entropy,
                                      structure_summaries, uncertainty_file_names, write_uncertainty)
from tests.trust.trust_models import (middle_slice, shapes_fixture, slice_file_fixture,  # noqa: F401 (fixtures)
                                      trust_models_fixture)


@pytest.fixture(scope="module")
def image(shapes):
    return middle_slice(shapes)[0]


@pytest.mark.parametrize("method", ["ensemble", "tta", "mcdropout"])
def test_maps_are_bounded_on_the_image_grid_and_the_labels_are_the_members_mean(method, trust_models, image):
    model = trust_models["dropout" if method == "mcdropout" else "two_folds"]
    predictor = Predictor.from_folder(model)
    result = UncertaintyPredictor(predictor, method, samples=3).predict_with_uncertainty(image)
    k = len(predictor.label_values)
    assert result.members == {"ensemble": 2, "tta": 4, "mcdropout": 3}[method]
    for name in MAPS:
        assert result.maps[name].array.shape == (1, *image.spatial_shape)
        assert result.maps[name].spacing == image.spacing and result.maps[name].origin == image.origin
        assert np.isfinite(result.maps[name].array).all()
    h, mi, var = (result.maps[name].array[0] for name in MAPS)
    assert h.min() >= 0 and h.max() <= math.log(k) + 1e-5
    assert mi.min() >= 0 and np.all(mi <= h + 1e-5)
    assert var.min() >= 0 and var.max() <= 0.25 + 1e-6
    assert mi.max() > 1e-4  # the members disagree somewhere (random weights, different folds/copies/masks)
    probabilities = result.probabilities.array
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-4)
    np.testing.assert_allclose(h, entropy(probabilities), atol=1e-4)
    assert np.array_equal(result.labels.array[0],
                          np.asarray(predictor.label_values)[probabilities.argmax(0)])
    if method == "ensemble":  # the folds' mean is what medseg predict predicts
        assert np.array_equal(result.labels.array, predictor.predict(image).array)


def test_identical_members_have_no_mutual_information(trust_models, image):
    predictor = Predictor.from_folder(trust_models["two_folds"], folds=["0"])
    predictor.networks = predictor.networks * 2  # the same fold twice
    result = UncertaintyPredictor(predictor, "ensemble").predict_with_uncertainty(image)
    assert result.maps["mutual_information"].array.max() < 1e-5
    assert result.maps["variance"].array.max() < 1e-6
    assert result.maps["entropy"].array.max() > 0.1


def test_mc_dropout_samples_vary_only_with_dropout_active(trust_models, image):
    predictor = Predictor.from_folder(trust_models["dropout"])
    network = predictor.networks[0]
    assert dropout_layers(network) and not network.training
    x = torch.randn(1, 1, *predictor.patch_size)
    with torch.no_grad():
        assert torch.equal(network(x), network(x))  # eval mode: dropout off
        with dropout_active(predictor.networks):
            assert not torch.equal(network(x), network(x))
            assert not any(m.training for m in network.modules() if not isinstance(m, type(dropout_layers(network)[0])))
    assert not any(m.training for m in network.modules())  # restored
    uncertain = UncertaintyPredictor(predictor, "mcdropout", samples=2, seed=3)
    first, again = (uncertain.predict_with_uncertainty(image).maps["mutual_information"].array for _ in range(2))
    assert np.array_equal(first, again)  # seeded
    state = torch.get_rng_state()
    uncertain.predict_with_uncertainty(image)
    assert torch.equal(state, torch.get_rng_state())  # the global generator is left as it was
    with pytest.raises(MedsegError, match="no dropout layers.*net.dropout"):
        UncertaintyPredictor(Predictor.from_folder(trust_models["two_folds"]), "mcdropout")


def test_the_summary_describes_each_predicted_structure(trust_models, image):
    predictor = UncertaintyPredictor(Predictor.from_folder(trust_models["two_folds"]), "tta")
    result = predictor.predict_with_uncertainty(image)
    summary = structure_summaries(result)
    labels = result.labels.array[0]
    assert summary["entropy_bound"] == pytest.approx(math.log(3))
    for value in (1, 2):
        entry = summary["structures"][str(value)]
        mask = labels == value
        assert entry["voxels"] == int(mask.sum())
        assert entry["volume_mm3"] == pytest.approx(mask.sum() * np.prod(image.spacing))
        if mask.any():
            assert entry["mean_entropy"] == pytest.approx(float(result.maps["entropy"].array[0][mask].mean()), rel=1e-5)
            assert entry["components"] >= 1 and entry["boundary_mean_mutual_information"] is not None
        else:
            assert entry["mean_entropy"] is None and entry["components"] == 0


def test_files_are_written_atomically_summary_last(trust_models, image, tmp_path, monkeypatch):
    predictor = UncertaintyPredictor(Predictor.from_folder(trust_models["two_folds"]), "ensemble")
    result = predictor.predict_with_uncertainty(image)
    import medseg.io

    real = medseg.io.write_image
    calls = []

    def failing(image, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(image, path)

    monkeypatch.setattr(medseg.io, "write_image", failing)
    with pytest.raises(OSError):
        write_uncertainty(result, tmp_path / "uncertainty", "c")
    assert sorted(p.name for p in (tmp_path / "uncertainty").iterdir()) == ["c_entropy.nii.gz"]  # no partial file
    monkeypatch.setattr(medseg.io, "write_image", real)
    written = write_uncertainty(result, tmp_path / "uncertainty", "c")
    assert [f"uncertainty/{p.name}" for p in written] == uncertainty_file_names("c")


def test_predict_cli_writes_maps_beside_the_labels(trust_models, slice_file, tmp_path):
    out = tmp_path / "out"
    runner = CliRunner()
    args = ["predict", "-i", str(slice_file), "-o", str(out), "-m", str(trust_models["two_folds"]),
            "--uncertainty", "ensemble", "--save-probabilities"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    source = read_image(slice_file)
    labels = read_image(out / "shapes_000.nii.gz")
    for name in MAPS:
        written = read_image(out / "uncertainty" / f"shapes_000_{name}.nii.gz")
        assert written.array.dtype == np.float32 and written.spatial_shape == source.spatial_shape
        assert np.allclose(written.spacing, source.spacing) and np.allclose(written.origin, source.origin)
    summary = json.loads((out / "uncertainty" / "shapes_000.json").read_text())
    assert summary["case"] == "shapes_000" and summary["method"] == "ensemble" and summary["members"] == 2
    assert summary["structures"]["1"]["voxels"] == int((labels.array == 1).sum())
    assert (out / "shapes_000.npz").is_file()
    again = runner.invoke(app, args)  # the maps are outputs too: not replaced without --overwrite
    assert again.exit_code == 2 and "--overwrite" in again.output


@pytest.mark.parametrize("extra, model, message", [
    (["--uncertainty", "bayes"], "two_folds", "is not one of ensemble, tta, mcdropout"),
    (["--uncertainty", "ensemble"], "one_fold", "at least two folds"),
    (["--uncertainty", "mcdropout"], "two_folds", "no dropout layers"),
    (["--uncertainty", "tta", "--no-tta"], "two_folds", "needs mirroring"),
    (["--uncertainty", "mcdropout", "--mc-samples", "1"], "dropout", "at least 2 samples"),
])
def test_bad_uncertainty_requests_exit_2_before_any_file(extra, model, message, trust_models, slice_file,
                                                         tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["predict", "-i", str(slice_file), "-o", str(out), "-m",
                                      str(trust_models[model]), *extra])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "fix:" in result.output
    assert not out.exists() or not any(out.rglob("*"))


def test_two_models_are_refused(trust_models, slice_file, tmp_path):
    result = CliRunner().invoke(app, ["predict", "-i", str(slice_file), "-o", str(tmp_path / "o"), "-m",
                                      str(trust_models["two_folds"]), "-m", str(trust_models["one_fold"]),
                                      "--uncertainty", "tta"])
    assert result.exit_code == 2 and "one model folder" in result.output
