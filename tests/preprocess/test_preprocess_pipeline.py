"""Preprocessing: resampling and normalisation rules, the cache on real cases, resuming after interruption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.config import Configuration, Normalization
from medseg.planning import Budget, compute_fingerprint, plan_dataset
from medseg.data.cache import cached_case_ids, case_paths, read_case
from medseg.preprocess.normalize import normalize
from medseg.preprocess.pipeline import preprocess_arrays, preprocess_dataset
from medseg.preprocess.resample import new_shape, resample_image, resample_label

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _dataset(name: str) -> Path:
    if not (SHARED / name / "dataset.json").is_file():
        pytest.skip(f"real-data battery not found at {SHARED}")
    return SHARED / name


def test_new_shape_follows_physical_size() -> None:
    assert new_shape((40, 100, 100), [3.0, 0.5, 0.5], [1.5, 1.0, 1.0]) == (80, 50, 50)


def test_label_resampling_keeps_classes_and_round_trips() -> None:
    label = np.zeros((1, 8, 12, 12), dtype=np.int8)
    label[0, 2:6, 3:9, 3:9] = 1
    label[0, 3:5, 5:7, 5:7] = 2
    up = resample_label(label, (16, 24, 24))
    assert set(np.unique(up)) == {0, 1, 2}
    down = resample_label(up, (8, 12, 12))
    np.testing.assert_array_equal(down, label)


def test_separate_z_copies_slices_through_plane() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 4, 10, 10)).astype(np.float32)
    out = resample_image(image, (8, 10, 10), separate_z=True, z_order=0)
    np.testing.assert_allclose(out[0, 0], image[0, 0], atol=1e-5)
    np.testing.assert_allclose(out[0, 1], image[0, 0], atol=1e-5)  # nearest through-plane: slice repeated
    np.testing.assert_allclose(out[0, 7], image[0, 3], atol=1e-5)


def test_image_resampling_is_identity_at_the_same_shape_and_smooth_otherwise() -> None:
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    image = np.sin(xx / 5)[None] + np.cos(yy / 7)[None]
    assert resample_image(image, (32, 32)) is not None
    np.testing.assert_array_equal(resample_image(image, (32, 32)), image)
    back = resample_image(resample_image(image, (64, 64)), (32, 32))
    assert np.abs(back - image)[:, 2:-2, 2:-2].max() < 0.02


def test_normalization_schemes() -> None:
    rng = np.random.default_rng(1)
    image = np.stack([rng.normal(100, 20, (20, 20)), rng.uniform(0, 255, (20, 20)), rng.normal(0, 1, (20, 20))])
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    out = normalize(image, [Normalization("zscore"), Normalization("rgb"),
                            Normalization("ct", clip=[-1.0, 1.0], mean=0.5, std=2.0)], mask)
    assert out[0].mean() == pytest.approx(0, abs=1e-5) and out[0].std() == pytest.approx(1, abs=1e-4)
    np.testing.assert_allclose(out[1], image[1] / 255, rtol=1e-6)
    np.testing.assert_allclose(out[2], (np.clip(image[2], -1, 1) - 0.5) / 2, rtol=1e-5, atol=1e-6)
    masked = normalize(image[:1], [Normalization("zscore", use_mask=True)], mask)[0]
    assert masked[mask].mean() == pytest.approx(0, abs=1e-5) and np.all(masked[~mask] == 0)


def test_preprocess_crops_a_constant_background_and_normalises_inside_the_content() -> None:
    # a ball of tissue and a small block in one corner of its bounding box, in a constant -3.8 background: one
    # corner of the crop is tissue, the other seven background, so the mask must come from the whole image
    zz, yy, xx = np.mgrid[0:24, 0:32, 0:32]
    ball = (zz - 12) ** 2 + (yy - 16) ** 2 + (xx - 14) ** 2 <= 8 ** 2
    ball[4:6, 8:10, 6:8] = True
    image = np.full((1, 24, 32, 32), -3.8, dtype=np.float32)
    image[0][ball] = np.random.default_rng(0).normal(2.0, 0.5, ball.sum())
    config = Configuration(name="3d_fullres", spatial_dims=3, target_spacing=[1.0, 1.0, 1.0], median_shape=[24, 32, 32],
                           normalization=[Normalization("zscore", use_mask=True)], resampling={},
                           patch_size=[16, 16, 16], batch_size=1, network={}, estimated_memory_bytes=0,
                           estimated_step_seconds=0.0, num_iterations=1)
    result = preprocess_arrays(image, None, [1.0, 1.0, 1.0], config)
    assert result.properties["crop_bbox"] == [[4, 21], [8, 25], [6, 23]]
    inside = ball[4:21, 8:25, 6:23]
    assert result.data[0][inside].mean() == pytest.approx(0, abs=1e-5)
    assert result.data[0][inside].std() == pytest.approx(1, abs=1e-4)
    assert np.all(result.data[0][~inside] == 0)


def _subset(source: Path, tmp_path: Path, ids: list[str]) -> Path:
    """A copy of some cases of a shared dataset (symlinks) so tests never write next to ../shared/data."""
    root = tmp_path / source.name
    spec = json.loads((source / "dataset.json").read_text())
    spec["numTraining"] = len(ids)
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
        for path in (source / sub).iterdir():
            if any(path.name.startswith(i + "_") or path.name.startswith(i + ".") for i in ids):
                (root / sub / path.name).symlink_to(path)
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


def test_preprocess_real_2d_cases_and_resume(tmp_path: Path) -> None:
    root = _subset(_dataset("isbi2012_em"), tmp_path, ["em_000", "em_001", "em_002"])
    plan = plan_dataset(compute_fingerprint(root, workers=1), Budget("cpu", 10**9, 300, 5e9, min_iterations=100))
    out = tmp_path / "cache"
    assert preprocess_dataset(root, plan, "2d", out, workers=1) == {"done": 3, "skipped": 0}
    case = read_case(out / "2d", "em_001")
    assert isinstance(case.data, np.memmap) and case.data.shape == (1, 512, 512) and case.data.dtype == np.float32
    assert case.data.mean() == pytest.approx(0, abs=1e-4) and case.data.std() == pytest.approx(1, abs=1e-3)
    label = np.array(__import__("PIL.Image", fromlist=["Image"]).open(root / "labelsTr" / "em_001.png"))
    np.testing.assert_array_equal(case.seg[0], label)
    locations = case.class_locations[1]
    assert len(locations) == 10_000 and np.all(case.seg[0][tuple(locations.T)] == 1)
    # an interrupted run: one case lost its properties file (written last), another never started
    case_paths(out / "2d", "em_002")["properties"].unlink()
    for path in case_paths(out / "2d", "em_000").values():
        path.unlink()
    assert cached_case_ids(out / "2d") == ["em_001"]
    assert preprocess_dataset(root, plan, "2d", out, workers=1) == {"done": 2, "skipped": 1}
    assert cached_case_ids(out / "2d") == ["em_000", "em_001", "em_002"]


@pytest.mark.slow
def test_preprocess_brats_lowres_3d(tmp_path: Path) -> None:
    root = _subset(_dataset("brats2013_mini"), tmp_path, ["brats_pat0003", "brats_pat0004"])
    plan = plan_dataset(compute_fingerprint(root, workers=1), Budget("cpu", 10**9, 600, 5e9, min_iterations=500))
    config = "3d_lowres" if "3d_lowres" in plan.configurations else "3d_fullres"
    preprocess_dataset(root, plan, config, tmp_path / "cache", workers=2)
    case = read_case(tmp_path / "cache" / config, "brats_pat0003")
    cropped = case.properties["shape_after_crop"]  # the brain: the z-scored background (-3.8) is cropped away
    assert all(c <= full for c, full in zip(cropped, (155, 240, 240))) and np.prod(cropped) < 0.5 * 155 * 240 * 240
    expected = new_shape(cropped, [1.0, 1.0, 1.0], plan.configurations[config].target_spacing)
    assert case.data.shape == (2, *expected) and case.seg.shape == (1, *expected)
    assert set(np.unique(case.seg)) <= {0, 1, 2, 3, 4} and len(np.unique(case.seg)) >= 3
    assert case.properties["classes_present"] == sorted(case.class_locations)


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.float64])
def test_normalising_by_blocks_of_rows_equals_normalising_at_once(dtype, monkeypatch) -> None:
    """The voxels are normalised a block of rows at a time (no whole float copy of the input): every block size
    gives the same bits, the statistics being the whole channel's."""
    import medseg.preprocess.normalize as normalisation

    rng = np.random.default_rng(2)
    image = rng.normal(0, 300, (5, 23, 9, 7)).astype(dtype)[:, 1:, :, 1:]  # a view, as after the crop
    mask = rng.random(image.shape[1:]) > 0.3
    schemes = [Normalization("ct", mean=1.0, std=2.0), Normalization("ct", clip=[-100.0, 200.0], mean=3.0, std=50.0),
               Normalization("zscore"), Normalization("zscore", use_mask=True), Normalization("rescale01")]
    monkeypatch.setattr(normalisation, "ROWS_PER_BLOCK", 10 ** 6)
    whole = normalize(image, schemes, mask)
    for rows in (1, 4):
        monkeypatch.setattr(normalisation, "ROWS_PER_BLOCK", rows)
        assert np.array_equal(normalize(image, schemes, mask), whole)
    lo, hi = float(image[0].min()), float(image[0].max())
    np.testing.assert_allclose(whole[0], (np.clip(image[0].astype(np.float32), lo, hi) - 1.0) / 2.0, rtol=1e-6)
