"""The weights that ship with medseg (bench/train_shipped.py): each loads from the package with safetensors (sha256
checked) and segments shared held-out cases above a Dice floor set just under what the bench measured; `medseg
incontext` without --model uses the shipped in-context model. The floors catch weights that were not trained (or
were broken) rather than quality changes of a few points: bench/results/*.json holds the figures."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.incontext.model import SHIPPED as INCONTEXT
from medseg.interactive.predictor import SHIPPED as PROMPTABLE
from medseg.interactive.predictor import load_segmenter
from medseg.io import read_image
from medseg.metrics import confusion, dice
from tests.conftest import shared_dataset

pytestmark = pytest.mark.slow


def test_both_shipped_models_are_package_data_under_the_size_limit():
    for folder in (PROMPTABLE, INCONTEXT):
        weights = folder / "fold_all" / "weights.safetensors"
        assert weights.is_file() and weights.stat().st_size <= 10 * 2**20
        assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == ["model.json", "weights.json",
                                                                            "weights.safetensors"]


def test_the_shipped_promptable_model_segments_held_out_polyps_from_clicks():
    """``medseg interactive`` with no --model: the shipped model on CVC-ClinicDB's held-out block (8 frames spread
    over it), the simulated user of ``medseg eval-interactive``, 5 clicks."""
    from medseg.interactive.cases import dataset_cases
    from medseg.interactive.evaluate import evaluate_interactive
    from medseg.interactive.slices import split_case_ids
    from medseg.data import open_dataset

    root = shared_dataset("cvc_clinicdb")
    held_out = split_case_ids([c.case_id for c in open_dataset(root).cases], 0.8)[1]
    chosen = [held_out[i] for i in np.linspace(0, len(held_out) - 1, 8).round().astype(int)]
    segmenter = load_segmenter()  # the shipped model
    assert segmenter.info["card"]["training_data"]
    result = evaluate_interactive({"shipped": segmenter}, dataset_cases([root], cases=",".join(chosen)),
                                  modes=("clicks",), max_interactions=5)
    summary, = result.summaries()
    assert summary.mean_dice[4] >= 0.85  # measured 0.940 (0.721 after one click)


def _dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    return dice(confusion(np.asarray(prediction, bool), np.asarray(truth, bool)))


def test_medseg_incontext_without_a_model_segments_held_out_lungs_from_eight_examples(tmp_path):
    from tests.conftest import shared_subset

    support = shared_subset("cxr_lungs", 8, tmp_path / "support")  # the first 8 cases: the training block
    root = shared_dataset("cxr_lungs")
    for case in ("cxr_140", "cxr_160"):  # the held-out block (the last 20 % of case ids)
        done = CliRunner().invoke(app, ["incontext", "--support", str(support), "--target",
                                        str(root / "imagesTr" / f"{case}_0000.png"), "-o", str(tmp_path / case)])
        assert done.exit_code == 0, done.output
        mask = read_image(next((tmp_path / case).glob("*mask*"))).array[0]
        truth = read_image(root / "labelsTr" / f"{case}.png").array[0]
        assert mask.shape == truth.shape
        assert _dice(mask > 0, truth > 0) >= 0.75  # measured 0.854 and 0.865 (bench/results/incontext.json)


def test_the_shipped_in_context_model_follows_its_support_set(tmp_path):
    """UniverSeg users report retrained models that ignore the support (#34): the same target with another task's
    examples must give another mask."""
    from medseg.incontext.session import InContextSession
    from medseg.incontext.support import SupportSet
    from tests.conftest import shared_subset

    session = InContextSession()
    target = read_image(shared_dataset("cxr_lungs") / "imagesTr" / "cxr_150_0000.png")
    lungs = session.predict(target, SupportSet.from_folder(shared_subset("cxr_lungs", 8, tmp_path / "lungs")))
    polyps = session.predict(target, SupportSet.from_folder(shared_subset("cvc_clinicdb", 8, tmp_path / "cvc")))
    assert lungs.mask.sum() > 0.1 * lungs.mask.size
    assert _dice(lungs.mask, polyps.mask) < 0.5
