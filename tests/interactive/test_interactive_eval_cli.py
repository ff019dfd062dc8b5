"""``medseg eval-interactive`` on real polyps with the baselines, and its user errors (exit 2)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.interactive.cases import object_slice, select_cases
from tests.conftest import shared_dataset


def test_eval_interactive_writes_its_files(tmp_path: Path) -> None:
    cvc = shared_dataset("cvc_clinicdb")
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval-interactive", str(cvc), "--cases", "2", "--baselines",
                                      "watershed,random_walker", "--modes", "box,box+clicks",
                                      "--max-interactions", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "NoC@85" in result.output and "watershed" in result.output
    data = json.loads((out / "interactive.json").read_text())
    assert {(s["method"], s["mode"]) for s in data["summaries"]} == {
        (m, mode) for m in ("watershed", "random_walker") for mode in ("box", "box+clicks")}
    rows = list(csv.DictReader((out / "per_case.csv").open()))
    assert len(rows) == 8 and {r["case_id"] for r in rows} == {"cvc_clinicdb_0000", "cvc_clinicdb_0001"}
    assert all(0 <= float(r["dice_3"]) <= 1 for r in rows)
    assert (out / "curves.png").stat().st_size > 1000


def test_eval_interactive_user_errors_exit_2(tmp_path: Path) -> None:
    missing = subprocess.run([sys.executable, "-m", "medseg", "eval-interactive", str(tmp_path / "nowhere"),
                              "--baselines", "watershed", "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert missing.returncode == 2 and "dataset folder not found" in missing.stderr
    assert "Traceback" not in missing.stderr
    runner = CliRunner()
    cvc = str(shared_dataset("cvc_clinicdb"))
    for options, message in ((["--label", "7"], "label 7"), (["--baselines", "snake"], "unknown baseline"),
                             (["--modes", "lasso"], "unknown interaction mode"),
                             (["--cases", "nope"], "unknown case ids"), (["--baselines", "none"], "nothing")):
        result = runner.invoke(app, ["eval-interactive", cvc, "--cases", "1", "-o", str(tmp_path / "x"), *options])
        assert result.exit_code == 2 and message in result.output, (options, result.output)
    assert not (tmp_path / "x").exists()


def test_case_selection_and_3d_slice() -> None:
    ids = ["a", "b", "c"]
    assert select_cases(ids, None) == ids and select_cases(ids, "2") == ["a", "b"]
    assert select_cases(ids, "c, a") == ["c", "a"]
    target = np.zeros((5, 8, 8), bool)
    target[1, :2, :2] = True
    target[3, 2:6, 2:6] = True
    image = np.arange(5 * 8 * 8, dtype=np.float32).reshape(1, 5, 8, 8)
    sliced, mask, index = object_slice(image, target)
    assert index == 3 and sliced.shape == (1, 8, 8) and np.array_equal(sliced, image[:, 3])
    assert mask.sum() == 16
