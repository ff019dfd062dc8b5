"""bench/train_shipped.py --incontext: a smoke run trains on a shared dataset and installs a loadable model
folder with only the shipped files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medseg.incontext.session import InContextSession
from medseg.incontext.support import SupportSet
from tests.conftest import shared_dataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_shipped_weights_script_installs_a_loadable_model(tmp_path):
    dataset = shared_dataset("hippocampus")
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "train_shipped.py"), "--incontext", "--datasets",
                             str(dataset), "--max-cases", "3", "--budget", "3s", "--grid", "32", "--features", "4,8",
                             "--validate-every", "2", "--threads", "1", "--work", str(tmp_path / "run"),
                             "--output", str(tmp_path / "weights")], check=False, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    installed = sorted(str(p.relative_to(tmp_path / "weights")) for p in (tmp_path / "weights").rglob("*")
                       if p.is_file())
    assert installed == ["fold_all/weights.json", "fold_all/weights.safetensors", "model.json"]
    session = InContextSession(tmp_path / "weights")
    assert session.info["card"]["training_data"] == ["hippocampus", "synthetic tasks"]
    rng = np.random.default_rng(0)
    mask = np.zeros((6, 20, 20), bool)
    mask[2:4, 5:12, 6:14] = True
    prediction = session.predict(rng.random((6, 20, 20)), SupportSet.from_arrays([rng.random((6, 20, 20))], [mask]))
    assert prediction.mask.shape == (6, 20, 20)


@pytest.mark.slow
def test_the_shipped_weights_script_installs_a_loadable_promptable_model(tmp_path):
    from medseg.interactive.predictor import load_segmenter
    from medseg.interactive.prompts import Click, PromptSet
    from tests.conftest import shared_subset

    dataset = shared_subset("cvc_clinicdb", 4, tmp_path / "cvc")
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "train_shipped.py"), "--interactive", "--datasets",
                             str(dataset), "--budget", "3s", "--grid", "32", "--features", "4,8,16", "--threads",
                             "1", "--work", str(tmp_path / "run"), "--output", str(tmp_path / "weights")],
                            check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    installed = sorted(str(p.relative_to(tmp_path / "weights")) for p in (tmp_path / "weights").rglob("*")
                       if p.is_file())
    assert installed == ["fold_all/weights.json", "fold_all/weights.safetensors", "model.json"]
    segmenter = load_segmenter(tmp_path / "weights")
    assert segmenter.info["card"]["training_data"] == ["cvc"]
    image = np.random.default_rng(0).random((3, 40, 50)).astype(np.float32)
    probability = segmenter.predict(segmenter.embed(image), PromptSet([Click((20.0, 25.0))]))
    assert probability.shape == (40, 50)
