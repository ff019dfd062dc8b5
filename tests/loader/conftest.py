"""Small preprocessed caches for the loader tests: real cases of ../shared/data, cropped and z-scored here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.data.cache import write_case
from medseg.preprocess.pipeline import class_locations

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def write_real_cache(folder: Path, name: str, count: int, crop) -> Path:
    """Cache ``count`` cases of shared dataset ``name``, each cropped by ``crop(image, label)`` and z-scored."""
    from medseg.data import open_dataset

    root = SHARED_DATA / name
    if not (root / "dataset.json").is_file():
        pytest.skip(f"real-data battery not found at {root} (clone the project next to ../shared)")
    dataset = open_dataset(root)
    rng = np.random.default_rng(0)
    for case in dataset.cases[:count]:
        image, label = crop(dataset.read_image(case).array, dataset.read_label(case).array)
        image = image.astype(np.float32)
        image = (image - image.mean(axis=tuple(range(1, image.ndim)), keepdims=True)) / (
            image.std(axis=tuple(range(1, image.ndim)), keepdims=True) + 1e-8)
        seg = label.astype(np.int8)
        write_case(folder, case.case_id, image, seg, class_locations(seg, rng), {"source": name})
    return folder


def _brats_crop(image: np.ndarray, label: np.ndarray):
    """Brain bounding box, every second voxel: about (70, 80, 70) per case."""
    box = tuple(slice(i.min(), i.max() + 1) for i in np.nonzero(image[0] != 0))
    step = (slice(None), *(slice(b.start, b.stop, 2) for b in box))
    return image[step], label[step]


@pytest.fixture(scope="session")
def brats_cache(tmp_path_factory) -> Path:
    return write_real_cache(tmp_path_factory.mktemp("brats_cache"), "brats2013_mini", 2, _brats_crop)


@pytest.fixture(scope="session")
def isbi_cache(tmp_path_factory) -> Path:
    return write_real_cache(tmp_path_factory.mktemp("isbi_cache"), "isbi2012_em", 3,
                            lambda image, label: (image[:, :256, :256], (label[:, :256, :256] > 0)))


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory) -> Path:
    """Two 3D cases ``(1, 24, 32, 40)`` whose image equals their label map: class 1 large, 2 small, 3 tiny;
    plus a case with no foreground at all."""
    folder = tmp_path_factory.mktemp("synthetic_cache")
    rng = np.random.default_rng(0)
    for index in range(2):
        seg = np.zeros((1, 24, 32, 40), dtype=np.int8)
        seg[0, 2:20, 3:30, 4:30] = 1
        seg[0, 10 + index:14, 20:24, 30:36] = 2
        seg[0, 5, 5, 35 - index] = 3
        write_case(folder, f"case_{index}", seg.astype(np.float32), seg, class_locations(seg, rng), {})
    empty = np.zeros((1, 24, 32, 40), dtype=np.int8)
    write_case(folder, "case_empty", empty.astype(np.float32), empty, {}, {})
    return folder
