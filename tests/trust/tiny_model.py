"""A tiny trained 2d model for the shift and explain tests: ``medseg example-data`` (4 volumes of shapes, labels
1 and 2), planned for a 32x32 patch and trained for 60 steps (a few seconds), once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from medseg.cli.app import app
from tests.training.conftest import tiny_dataset_and_plan


@pytest.fixture(scope="session", name="tiny_model")
def tiny_model_fixture(tmp_path_factory) -> tuple[Path, Path]:
    """``(model folder with fold_all, its dataset)``."""
    root = tmp_path_factory.mktemp("trust_tiny_model")
    dataset, plans = tiny_dataset_and_plan(root)
    model = root / "model"
    result = CliRunner().invoke(app, ["train", str(dataset), "-c", "2d", "-f", "all", "-o", str(model), "-p",
                                      str(plans), "--max-iterations", "60", "--iterations-per-epoch", "30",
                                      "--no-validation"])
    assert result.exit_code == 0, result.output
    return model, dataset
