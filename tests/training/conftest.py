"""Shared set-up of the training tests: a tiny synthetic dataset and a plan of it for a small 2D patch."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from medseg.cli.app import app


def tiny_dataset_and_plan(tmp_path: Path) -> tuple[Path, Path]:
    """``medseg example-data`` (4 cases) and ``plans.json`` with the 2d patch 32x32 and batch 4."""
    runner = CliRunner()
    dataset = tmp_path / "shapes"
    assert runner.invoke(app, ["example-data", str(dataset), "--cases", "4"]).exit_code == 0
    plans = tmp_path / "plans.json"
    result = runner.invoke(app, ["plan", str(dataset), "-o", str(plans), "--flops", "1e10", "--budget", "60",
                                 "--set", "2d.patch_size=[32,32]", "--set", "2d.batch_size=4"])
    assert result.exit_code == 0, result.output
    return dataset, plans
