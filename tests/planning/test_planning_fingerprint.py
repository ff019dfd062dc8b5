"""Fingerprint numbers against an independent computation (PIL / SimpleITK + numpy, not medseg.io)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.config import Fingerprint
from medseg.planning import compute_fingerprint
from medseg.planning.fingerprint import background_values, content_bbox

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
ALL_VOXELS = 10**9  # a sample cap above any case's foreground: statistics become exact


def _dataset(name: str) -> Path:
    if not (SHARED / name / "dataset.json").is_file():
        pytest.skip(f"real-data battery not found at {SHARED}")
    return SHARED / name


def _independent(images: list[list[np.ndarray]], labels: list[np.ndarray]) -> dict:
    """Foreground statistics over all foreground voxels, class fractions, cases per class, in plain numpy."""
    channels = len(images[0])
    pooled = [np.concatenate([case[c][lab > 0].astype(np.float64) for case, lab in zip(images, labels)])
              for c in range(channels)]
    all_labels = np.concatenate([lab.ravel() for lab in labels])
    values, counts = np.unique(all_labels, return_counts=True)
    return {
        "intensity": [dict(mean=p.mean(), std=p.std(), min=p.min(), max=p.max(), median=np.median(p),
                           p005=np.percentile(p, 0.5), p995=np.percentile(p, 99.5), n=p.size) for p in pooled],
        "fraction": {str(v): c / all_labels.size for v, c in zip(values, counts)},
        "cases_with": {str(v): sum(int(np.any(lab == v)) for lab in labels) for v in values},
    }


def _assert_matches(fingerprint: Fingerprint, expected: dict) -> None:
    for c, stats in enumerate(expected["intensity"]):
        got = fingerprint.intensity[str(c)]
        assert got.num_samples == stats["n"]
        for name, key in [("mean", "mean"), ("std", "std"), ("min", "min"), ("max", "max"), ("median", "median"),
                          ("percentile_00_5", "p005"), ("percentile_99_5", "p995")]:
            assert getattr(got, name) == pytest.approx(stats[key], rel=1e-9, abs=1e-9), (c, name)
    assert fingerprint.class_voxel_fraction == pytest.approx(expected["fraction"], rel=1e-12)
    assert fingerprint.cases_with_class == expected["cases_with"]


def test_isbi_fingerprint_matches_numpy() -> None:
    from PIL import Image as PILImage

    root = _dataset("isbi2012_em")
    ids = sorted(p.name[:-4] for p in (root / "labelsTr").iterdir())
    images = [[np.array(PILImage.open(root / "imagesTr" / f"{i}_0000.png"))] for i in ids]
    labels = [np.array(PILImage.open(root / "labelsTr" / f"{i}.png")) for i in ids]
    fingerprint = compute_fingerprint(root, samples_per_case=ALL_VOXELS, workers=1)
    _assert_matches(fingerprint, _independent(images, labels))
    assert fingerprint.num_cases == 24 and fingerprint.median_spacing == [1.0, 1.0]
    assert fingerprint.cases[0].shape_before_crop == [512, 512] and fingerprint.anisotropy == 1.0


def test_brats_fingerprint_matches_numpy() -> None:
    import SimpleITK as sitk

    root = _dataset("brats2013_mini")
    ids = sorted(p.name[: -len(".nii.gz")] for p in (root / "labelsTr").iterdir())
    read = lambda p: sitk.GetArrayFromImage(sitk.ReadImage(str(p)))  # noqa: E731
    images = [[read(root / "imagesTr" / f"{i}_{c:04d}.nii.gz") for c in range(2)] for i in ids]
    labels = [read(root / "labelsTr" / f"{i}.nii.gz") for i in ids]
    fingerprint = compute_fingerprint(root, samples_per_case=ALL_VOXELS, workers=2)
    _assert_matches(fingerprint, _independent(images, labels))
    assert fingerprint.median_spacing == [1.0, 1.0, 1.0]
    assert fingerprint.cases[0].shape_before_crop == [155, 240, 240]
    # BraTS here is z-scored with a constant non-zero background (crop-to-nonzero would keep the whole volume):
    # the crop is the bounding box of voxels that differ from the corner value in a channel, it holds the brain
    # mask that ships with the data, and it removes over 25 % of the volume (so the plan z-scores inside it).
    for case, channels, case_id in zip(fingerprint.cases, images, ids):
        mask = np.any(np.stack([c != c[0, 0, 0] for c in channels]), axis=0)
        where = np.argwhere(mask)
        assert case.crop_bbox == [[int(lo), int(hi) + 1] for lo, hi in zip(where.min(0), where.max(0))]
        brain = np.argwhere(read(root / "brainmaskTr" / f"{case_id}.nii.gz") > 0)
        assert all(lo <= b_lo and b_hi < hi for (lo, hi), b_lo, b_hi in zip(case.crop_bbox, brain.min(0), brain.max(0)))
        assert case.relative_size_after_crop < 0.5


def test_sampling_is_bounded_and_deterministic_across_workers() -> None:
    root = _dataset("isbi2012_em")
    one = compute_fingerprint(root, samples_per_case=500, workers=1)
    two = compute_fingerprint(root, samples_per_case=500, workers=2)
    assert one.intensity["0"].num_samples == 24 * 500
    assert one.to_dict() == two.to_dict()
    exact = compute_fingerprint(root, samples_per_case=ALL_VOXELS, workers=1).intensity["0"]
    assert one.intensity["0"].mean == pytest.approx(exact.mean, rel=0.03)


def test_content_bbox_crops_to_nonzero_voxels() -> None:
    image = np.zeros((2, 6, 7, 8))
    image[0, 1:3, 2, 4] = 1
    image[1, 4, 5, 1] = -2
    assert content_bbox(image) == [[1, 5], [2, 6], [1, 5]]
    assert content_bbox(np.zeros((1, 3, 4))) == [[0, 3], [0, 4]]


def test_content_bbox_crops_a_constant_nonzero_background() -> None:
    # a skull-stripped MRI z-scored before release: the background is one negative value, the brain varies
    rng = np.random.default_rng(0)
    image = np.full((2, 20, 30, 40), -3.8, dtype=np.float32)
    image[1] = 0.5  # a second channel with another constant background
    image[0, 3:15, 5:25, 10:31] = rng.normal(size=(12, 20, 21))
    image[1, 4:12, 6:20, 12:30] = rng.normal(size=(8, 14, 18))
    assert background_values(image).tolist() == pytest.approx([-3.8, 0.5])
    assert content_bbox(image) == [[3, 15], [5, 25], [10, 31]]


def test_content_bbox_keeps_crop_to_nonzero_when_the_corners_differ() -> None:
    # noise everywhere (an EM image): no constant background, so only zeros could be cropped, and there are none
    image = np.random.default_rng(1).uniform(1, 2, size=(1, 12, 16)).astype(np.float32)
    assert background_values(image).tolist() == [0.0]
    assert content_bbox(image) == [[0, 12], [0, 16]]
    image[:, :2] = 0  # the top rows are zero but the bottom corners are not: crop to non-zero as before
    assert content_bbox(image) == [[2, 12], [0, 16]]


def test_fingerprint_of_anisotropic_example(tmp_path: Path) -> None:
    from medseg.synth.shapes import write_shapes_dataset

    root = write_shapes_dataset(tmp_path / "shapes", num_cases=3)
    out = tmp_path / "fp.json"
    result = CliRunner().invoke(app, ["fingerprint", str(root), "-o", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    loaded = Fingerprint.from_dict(json.loads(out.read_text()))
    assert loaded.median_spacing == [3.0, 1.0, 1.0] and loaded.anisotropy == 3.0
    assert set(loaded.class_voxel_fraction) == {"0", "1", "2"}
    assert sum(loaded.class_voxel_fraction.values()) == pytest.approx(1.0)
    assert loaded.to_dict() == compute_fingerprint(root, workers=1).to_dict()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["isbi2012_em", "drive", "cvc_clinicdb", "brats2013_mini"])
def test_fingerprint_cli_runs_on_every_shared_dataset(name: str, tmp_path: Path) -> None:
    out = tmp_path / "fingerprint.json"
    result = CliRunner().invoke(app, ["fingerprint", str(_dataset(name)), "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["num_cases"] == json.loads((_dataset(name) / "dataset.json").read_text())["numTraining"]
    assert len(data["intensity"]) == len(data["channel_names"])
