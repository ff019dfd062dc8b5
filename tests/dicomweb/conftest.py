"""Fixtures of the DICOMweb tests: one real Orthanc per test module (see orthanc.py) and a small model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dicomweb.orthanc import Orthanc, start_orthanc


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory) -> Orthanc:
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A small 2D U-Net (seeded random weights) for one channel and three labels."""
    from medseg.synth.shapes import write_shapes_dataset
    from tests.inference.conftest import make_model_folder, plan_for

    folder = tmp_path_factory.mktemp("model")
    dataset = write_shapes_dataset(folder / "shapes", num_cases=2)
    return make_model_folder(folder / "model", dataset, "2d", plan=plan_for(dataset), features=[4, 8, 16, 16, 16])
