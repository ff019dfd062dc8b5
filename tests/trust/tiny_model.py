"""What the shift and explain tests share: a one-line-exit-2 check, and a tiny trained 2d model (``medseg
example-data``: 4 volumes of shapes, labels 1 and 2, planned for a 32x32 patch and trained for 60 steps, a few
seconds), once per test session."""

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
                                      "--no-validation", "--budget", "1h"])  # 60 steps, however loaded the machine
    assert result.exit_code == 0, result.output
    return model, dataset


def one_line_exit_2(result, needle: str) -> None:
    """The CLI ``result`` ended with exit code 2 and one non-empty line holding ``needle``, no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.output, result.output
