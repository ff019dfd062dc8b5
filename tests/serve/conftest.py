"""Fixtures of the prediction-service tests: tiny model folders, a tokens file, small images, an app factory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.io import Image, write_image
from tests.inference.conftest import make_model_folder, plan_for

TOKEN = "serve-test-token-1"
OTHER_TOKEN = "serve-test-token-2"


@pytest.fixture(scope="session")
def random_model(tmp_path_factory) -> Path:
    """A 2d model folder with seeded random weights (loads in well under a second)."""
    from medseg.synth.shapes import write_shapes_dataset

    dataset = write_shapes_dataset(tmp_path_factory.mktemp("serve_data") / "shapes", num_cases=2)
    return make_model_folder(tmp_path_factory.mktemp("serve_models") / "shapes_2d", dataset, "2d",
                             plan=plan_for(dataset), features=[4, 8, 16, 16, 16])


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> Path:
    """A 2d model trained 4 steps by the real trainer (``medseg train``), once per test session."""
    from typer.testing import CliRunner

    from medseg.cli.app import app
    from tests.training.conftest import tiny_dataset_and_plan

    folder = tmp_path_factory.mktemp("serve_trained")
    dataset, plans = tiny_dataset_and_plan(folder)
    model = folder / "trained_2d"
    result = CliRunner().invoke(app, ["train", str(dataset), "-c", "2d", "-f", "0", "-o", str(model), "-p",
                                      str(plans), "--max-iterations", "4", "--iterations-per-epoch", "2",
                                      "--workers", "0", "--budget", "600"])
    assert result.exit_code == 0, result.output
    return model


@pytest.fixture
def tokens_file(tmp_path) -> Path:
    """Two tokens: ``TOKEN`` unlimited, ``OTHER_TOKEN`` 3 requests at once, then 1 per minute."""
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [{"token": TOKEN, "name": "lab", "requests_per_minute": None},
                                           {"token": OTHER_TOKEN, "name": "slow", "requests_per_minute": 1,
                                            "burst": 3}]}))
    return path


def small_volume(seed: int = 0, shape: tuple[int, ...] = (6, 40, 40)) -> Image:
    """A bright ellipse in noise, anisotropic spacing and a shifted origin: ``(1, Z, Y, X)`` float32."""
    rng = np.random.default_rng(seed)
    axes = np.indices(shape[-2:])
    inside = ((axes[0] - shape[-2] / 2) / (shape[-2] / 4)) ** 2 + ((axes[1] - shape[-1] / 2) / (shape[-1] / 3)) ** 2 < 1
    array = np.where(inside, 180.0, 40.0) + rng.normal(0, 10, shape)
    return Image.from_array(array.astype(np.float32), spacing=(3.0, 1.0, 1.0)[-len(shape):],
                            origin=(4.0, -2.0, 7.5)[-len(shape):])


@pytest.fixture
def volume_file(tmp_path) -> Path:
    return write_image(small_volume(), tmp_path / "case_a.nii.gz")


def auth(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}
