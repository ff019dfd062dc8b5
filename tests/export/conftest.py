"""Fixtures of the export tests: small model folders fitted to crops of the real-data battery (random, seeded
weights) and the predictions of both engines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def small_dataset(folder: Path, name: str, cases: list[str], crop: tuple[slice, ...] | None = None) -> Path:
    """A dataset folder of ``cases`` of the shared dataset ``name``: images and labels cropped to ``crop`` (a 2D
    crop of 512x512 EM sections keeps the plan small) or, without one, linked."""
    from medseg.io import Image, read_image, write_image

    source = SHARED_DATA / name
    if not (source / "dataset.json").is_file():
        pytest.skip(f"real-data battery not found at {source}")
    spec = json.loads((source / "dataset.json").read_text())
    ending = spec["file_ending"]
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    spec["numTraining"] = len(cases)
    (folder / "dataset.json").write_text(json.dumps(spec))
    for case in cases:
        for part, src in ((f"imagesTr/{case}_0000{ending}", source / "imagesTr" / f"{case}_0000{ending}"),
                          (f"labelsTr/{case}{ending}", source / "labelsTr" / f"{case}{ending}")):
            if crop is None:
                (folder / part).symlink_to(src)
            else:
                image = read_image(src)
                write_image(Image.from_array(image.array[(slice(None), *crop)], image.spacing, channel_axis=True),
                            folder / part)
    return folder


@pytest.fixture(scope="session")
def em_model(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset of two 192x192 crops of isbi2012_em sections, a 2d model folder planned for it)."""
    from tests.inference.conftest import make_model_folder

    root = tmp_path_factory.mktemp("em")
    dataset = small_dataset(root / "em", "isbi2012_em", ["em_000", "em_001"], (slice(100, 292), slice(150, 342)))
    return dataset, make_model_folder(root / "model", dataset, "2d", features=[8, 16, 16, 16, 16, 16], seed=3)


@pytest.fixture(scope="session")
def hippocampus_model(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset of two hippocampus volumes, a 3d_fullres model folder with two folds planned for it)."""
    from tests.inference.conftest import make_model_folder

    root = tmp_path_factory.mktemp("hippocampus")
    dataset = small_dataset(root / "hippocampus", "hippocampus", ["hippocampus_001", "hippocampus_003"])
    return dataset, make_model_folder(root / "model", dataset, "3d_fullres", folds=("0", "1"),
                                      features=[4, 8, 16, 16, 16], seed=5)
