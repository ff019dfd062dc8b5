"""Classical baselines: every method finds a bright object on well-constructed images once fitted, the fit's Dice
(from rank/label counts) equals medseg.metrics' Dice of the label maps it writes, several labels come from several
ranks, the CLI writes label maps in the input's geometry and refuses bad input in one line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.classical import METHODS, fit_classical, read_classical_model, segment_with_classical
from medseg.classical.features import on_coarse_grid, rank_by_mean
from medseg.classical.model import best_mapping, rank_label_counts
from medseg.cli.app import app
from medseg.io import Image, read_image, write_image
from medseg.trust.qc import case_dice


def _ellipse(shape, rng, scale=0.25):
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    centre = rng.uniform(0.4, 0.6, len(shape)) * np.array(shape)
    radii = rng.uniform(0.8, 1.2, len(shape)) * scale * np.array(shape)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0


def _dataset(root, *, cases=4, shape=(48, 48), lesion=False, spacing=None, ending=".nii.gz", seed=0):
    """Cases of a bright ellipse (label 1; with ``lesion`` a brighter one inside it, label 2) on a dark, noisy
    background."""
    rng = np.random.default_rng(seed)
    for index in range(cases):
        organ = _ellipse(shape, rng)
        label = organ.astype(np.uint8)
        if lesion:
            inner = _ellipse(shape, rng, scale=0.09) & organ
            label[inner] = 2
        image = 0.2 + 0.4 * (label >= 1) + 0.35 * (label == 2) + rng.normal(0, 0.04, shape)
        geometry = (spacing or (1.0,) * len(shape), (1.0,) * len(shape), np.eye(len(shape)))
        write_image(Image(image.astype(np.float32)[None], *geometry), root / "imagesTr" / f"c{index}_0000{ending}")
        write_image(Image(label[None], *geometry), root / "labelsTr" / f"c{index}{ending}")
    labels = {"background": 0, "organ": 1, **({"lesion": 2} if lesion else {})}
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MR"}, "labels": labels,
                                                   "numTraining": cases, "file_ending": ending}))
    return root


def test_rank_by_mean_orders_regions_by_brightness_and_puts_empty_ids_last():
    regions = np.array([[2, 2, 0], [0, 3, 3]])
    image = np.array([[[0.9, 0.8, 0.5], [0.4, 0.1, 0.2]]])
    # means: id 0 0.45, id 1 (no voxels), id 2 0.85, id 3 0.15 -> ranks 3: 0, 0: 1, 2: 2, 1: 3
    assert rank_by_mean(regions, image).tolist() == [[2, 2, 1], [1, 0, 0]]


def test_on_coarse_grid_runs_on_at_most_max_voxels_and_returns_the_full_grid():
    seen = []
    array = np.random.default_rng(0).random((100, 60)).astype(np.float32)

    def method(coarse):
        seen.append(coarse.shape)
        return coarse * 2

    out = on_coarse_grid(method, array, 1000)
    assert out.shape == array.shape and np.prod(seen[0]) <= 1000
    assert abs(out.mean() - 2 * array.mean()) < 0.05
    assert on_coarse_grid(method, array, 10_000) is not None and seen[-1] == array.shape  # small: untouched


def test_the_best_mapping_maximises_the_mean_case_dice():
    ranks = np.array([0, 0, 1, 1, 2, 2])
    reference = np.array([0, 0, 0, 1, 1, 1])
    counts = [rank_label_counts(ranks, reference, [0, 1])]
    mapping, score = best_mapping(counts, 3, [0, 1])
    assert mapping == (0, 1, 1) and score == pytest.approx(2 * 3 / (4 + 3))


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_finds_a_bright_object_once_fitted(tmp_path, method):
    dataset = _dataset(tmp_path / "ds")
    model = fit_classical(dataset, method, cases=3)
    assert model.train_dice > 0.85, model.search
    assert model.rank_labels[-1] == 1 and 0 in model.rank_labels  # the brightest rank is the object
    image = read_image(dataset / "imagesTr" / "c3_0000.nii.gz")  # not among the 3 fitted cases
    labels = model.predict(image)
    assert labels.array.shape == image.array.shape and labels.array.dtype == np.uint8
    reference = read_image(dataset / "labelsTr" / "c3.nii.gz").array[0]
    assert case_dice(labels.array[0], reference, [0, 1]) > 0.85


def test_the_fit_dice_is_medseg_metrics_dice_of_the_written_maps_and_two_labels_come_from_two_ranks(tmp_path):
    dataset = _dataset(tmp_path / "ds", lesion=True, cases=3)
    model, written = segment_with_classical(dataset, "multi-otsu", tmp_path / "out", tune_cases=3)
    assert model.params["classes"] >= 3 and {1, 2} <= set(model.rank_labels)
    per_case = [case_dice(read_image(path).array[0], read_image(dataset / "labelsTr" / path.name).array[0], [0, 1, 2])
                for path in written]
    assert model.train_dice == pytest.approx(float(np.mean(per_case)), abs=1e-9)
    assert model.train_dice > 0.8
    saved = read_classical_model(tmp_path / "out" / "classical.json")
    assert saved.params == model.params and saved.rank_labels == model.rank_labels
    assert all(math.isfinite(entry["train_dice"]) for entry in saved.search)


def test_the_cli_writes_label_maps_in_the_input_geometry(tmp_path):
    dataset = _dataset(tmp_path / "ds", shape=(8, 24, 24), spacing=(3.0, 0.8, 0.8), cases=3)
    out = tmp_path / "pred"
    result = CliRunner().invoke(app, ["classical", str(dataset), "--method", "gmm", "--tune-cases", "2", "-o",
                                      str(out)])
    assert result.exit_code == 0, result.output
    assert "training Dice" in result.output and (out / "classical.json").is_file()
    for index in range(3):
        image, labels = read_image(dataset / "imagesTr" / f"c{index}_0000.nii.gz"), read_image(out / f"c{index}.nii.gz")
        assert labels.array.shape == image.array.shape
        assert np.allclose(labels.spacing, image.spacing) and np.allclose(labels.origin, image.origin)
    evaluation = CliRunner().invoke(app, ["evaluate", str(out), str(dataset / "labelsTr"), "-o",
                                          str(tmp_path / "eval"), "--no-plots", "--workers", "1"])
    assert evaluation.exit_code == 0, evaluation.output
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert "1" in json.dumps(summary)


def _one_line_exit_2(result, needle):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.output, result.output


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path):
    dataset = _dataset(tmp_path / "ds", cases=2)
    runner = CliRunner()
    out = tmp_path / "out"
    _one_line_exit_2(runner.invoke(app, ["classical", str(dataset), "--method", "snakes", "-o", str(out)]),
                     "unknown classical method")
    _one_line_exit_2(runner.invoke(app, ["classical", str(dataset), "--method", "otsu", "--tune-cases", "0", "-o",
                                         str(out)]), "--tune-cases")
    two_channels = tmp_path / "two_channels"
    for channel in range(2):
        write_image(Image.from_array(np.ones((48, 48), np.float32)), two_channels / f"x_000{channel}.nii.gz")
    _one_line_exit_2(runner.invoke(app, ["classical", str(dataset), "--method", "otsu", "-i", str(two_channels),
                                         "-o", str(out)]), "channel")
    assert not out.exists() or not any(out.iterdir())
    (out).mkdir(exist_ok=True)
    (out / "classical.json").write_text("{}")
    _one_line_exit_2(runner.invoke(app, ["classical", str(dataset), "--method", "otsu", "-o", str(out)]),
                     "classical.json")
