"""The README's main job, on a short budget: the whole pipeline runs and the model learns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medseg.demo import run_demo
from medseg.errors import MedsegError


@pytest.mark.slow
def test_demo_runs_end_to_end_and_learns(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "demo", num_cases=6, num_test=2, budget_seconds=20)
    assert result.steps > 20
    assert result.dice["organ"] > 0.5  # an untrained network scores about 0.1 on this class
    report = json.loads(result.report.read_text())
    assert report["held_out_dice"] == result.dice
    assert sorted(report["overlays"]) == ["shapes_006.png", "shapes_007.png"]
    assert (tmp_path / "demo" / "evaluation" / "metrics.csv").is_file()
    assert (tmp_path / "demo" / "model" / "fold_all" / "progress.png").is_file()
    again = run_demo(tmp_path / "demo", num_cases=2, num_test=1, budget_seconds=3)  # replaces its own folder
    assert again.folder == tmp_path / "demo"


def test_demo_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(MedsegError, match="not made by medseg demo"):
        run_demo(tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
