"""Fixtures of the uncertainty and calibration tests: the synthetic shapes dataset, small 2d model folders with
seeded random weights (two folds; one fold with dropout), and one 64x64 slice of a case as a 2D image file."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from medseg.io import Image, write_image
from tests.inference.conftest import make_model_folder, plan_for

FEATURES = [4, 8, 8, 8, 8]


@pytest.fixture(scope="session", name="shapes")
def shapes_fixture(tmp_path_factory) -> Path:
    from medseg.synth.shapes import write_shapes_dataset

    return write_shapes_dataset(tmp_path_factory.mktemp("trust_data") / "shapes", num_cases=3)


@pytest.fixture(scope="session", name="trust_models")
def trust_models_fixture(tmp_path_factory, shapes) -> dict[str, Path]:
    """``{"two_folds": ..., "one_fold": ..., "dropout": ...}`` 2d model folders for ``shapes``."""
    root = tmp_path_factory.mktemp("trust_models")
    plan = plan_for(shapes)
    with_dropout = copy.deepcopy(plan)
    with_dropout.configurations["2d"].network["dropout"] = 0.3
    return {"two_folds": make_model_folder(root / "two_folds", shapes, "2d", plan=plan, folds=("0", "1"),
                                           features=FEATURES),
            "one_fold": make_model_folder(root / "one_fold", shapes, "2d", plan=plan, features=FEATURES),
            "dropout": make_model_folder(root / "dropout", shapes, "2d", plan=with_dropout, features=FEATURES,
                                         seed=5)}


def middle_slice(shapes: Path, case: str = "shapes_000") -> tuple[Image, np.ndarray]:
    """The middle slice of ``case``'s image (with the 2D part of its geometry) and of its label map."""
    from medseg.data import open_dataset

    data = open_dataset(shapes)
    image, label = data.read_image(data.case(case)), data.read_label(data.case(case))
    z = image.array.shape[1] // 2
    spacing = image.spacing[1:]
    return (Image.from_array(image.array[:, z], spacing, (3.0, -2.0), np.eye(2), channel_axis=True),
            label.array[0, z])


@pytest.fixture(scope="session", name="slice_file")
def slice_file_fixture(tmp_path_factory, shapes) -> Path:
    """``shapes_000``'s middle slice as ``images/shapes_000_0000.nii.gz``."""
    image, _ = middle_slice(shapes)
    return write_image(image, tmp_path_factory.mktemp("trust_images") / "images" / "shapes_000_0000.nii.gz")
