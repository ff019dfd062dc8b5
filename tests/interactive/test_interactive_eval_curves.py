"""Curve and NoC bookkeeping with test doubles whose answers are known, and the written JSON / CSV / PNG."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk

from medseg.errors import MedsegError
from medseg.interactive.evaluate import evaluate_interactive, interaction_curve, noc
from medseg.interactive.prompts import PromptSet
from medseg.interactive.segmenter import Segmenter

SHAPE = (48, 48)


def disc_target() -> np.ndarray:
    target = np.zeros(SHAPE, bool)
    target[disk((24, 24), 10)] = True
    return target


class Oracle:
    """Returns the target once it has ``k`` prompts, nothing before; counts its calls."""

    def __init__(self, target: np.ndarray, k: int, name: str = "oracle"):
        self.target, self.k, self.name = target, k, name
        self.embeds, self.previous_seen = 0, []

    def embed(self, image: np.ndarray) -> str:
        self.embeds += 1
        return "embedding"

    def predict(self, embedding, prompts: PromptSet, previous=None) -> np.ndarray:
        assert embedding == "embedding"
        self.previous_seen.append(previous)
        return (self.target if len(prompts) >= self.k else np.zeros(SHAPE, bool)).astype(np.float32)


class Growing:
    """Prediction: a disc whose radius grows by 2 px per prompt, from 2 px; exact at radius 10 (5 prompts)."""

    name = "growing"

    def embed(self, image):
        return None

    def predict(self, embedding, prompts, previous=None):
        out = np.zeros(SHAPE, np.float32)
        out[disk((24, 24), min(10, 2 * len(prompts)))] = 1.0
        return out


def image() -> np.ndarray:
    return np.zeros((1, *SHAPE), np.float32)


def test_oracle_curve_reaches_one_after_k_prompts_and_feeds_previous() -> None:
    target = disc_target()
    oracle = Oracle(target, k=3)
    assert isinstance(oracle, Segmenter)
    curve = interaction_curve(oracle, image(), target, "clicks", max_interactions=6, rng=np.random.default_rng(0))
    assert curve.dice.tolist() == [0, 0, 1, 1, 1, 1]
    assert curve.prompts == 3  # exact after 3: the simulator stops and the curve stays flat
    assert oracle.embeds == 1 and len(oracle.previous_seen) == 3
    assert oracle.previous_seen[0] is None and oracle.previous_seen[1].shape == SHAPE
    assert noc(curve.dice, 0.85) == 3


def test_box_mode_is_one_prompt_and_a_flat_curve() -> None:
    target = disc_target()
    curve = interaction_curve(Oracle(target, k=2), image(), target, "box", max_interactions=5,
                              rng=np.random.default_rng(0))
    assert curve.prompts == 1 and curve.dice.tolist() == [0] * 5


def test_growing_disc_gives_the_dice_of_nested_discs() -> None:
    target = disc_target()
    curve = interaction_curve(Growing(), image(), target, "clicks", max_interactions=8, rng=np.random.default_rng(0))
    area = target.sum()
    for k in range(1, 6):
        grown = np.zeros(SHAPE, bool)
        grown[disk((24, 24), 2 * k)] = True
        assert curve.dice[k - 1] == pytest.approx(2 * grown.sum() / (grown.sum() + area))
    assert curve.dice[4:].tolist() == [1.0] * 4


def test_noc_convention() -> None:
    curve = [0.5, 0.79, 0.84, 0.86, 0.91]
    assert noc(curve, 0.80) == 3 and noc(curve, 0.85) == 4 and noc(curve, 0.90) == 5
    assert noc(curve, 0.95) == 5  # never reached: capped at the number of interactions
    assert noc(curve, 0.95, max_interactions=20) == 20
    assert noc([0.9], 0.85) == 1


def test_evaluate_interactive_summaries_and_files(tmp_path: Path) -> None:
    target = disc_target()
    cases = [("a", image(), target), ("empty", image(), np.zeros(SHAPE, bool)), ("b", image(), target)]
    segmenters = {"fast": Oracle(target, 1), "slow": Oracle(target, 4)}
    result = evaluate_interactive(segmenters, cases, modes=["clicks", "box"], max_interactions=5, seed=0)
    assert result.skipped == ["empty"]
    assert segmenters["slow"].embeds == 2  # once per case, shared by the modes
    fast, slow = result.summary("fast", "clicks"), result.summary("slow", "clicks")
    assert fast.mean_dice == [1.0] * 5 and fast.noc == {"80": 1.0, "85": 1.0, "90": 1.0}
    assert slow.mean_dice == [0, 0, 0, 1, 1] and slow.noc["85"] == 4.0 and slow.failures["85"] == 0
    box = result.summary("slow", "box")
    assert box.mean_dice == [0.0] * 5 and box.noc["90"] == 5.0 and box.failures["90"] == 2
    assert slow.dice_at == {"1": 0.0, "3": 0.0, "5": 1.0}

    paths = result.write(tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["max_interactions"] == 5 and len(data["cases"]) == 8 and data["skipped"] == ["empty"]
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == 8 and rows[0]["method"] == "fast" and rows[0]["dice_5"] == "1.0000"
    assert {r["noc85"] for r in rows if r["method"] == "slow" and r["mode"] == "clicks"} == {"4"}
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["curves.png", "interactive.json", "per_case.csv"]


def test_every_method_meets_the_same_first_prompt() -> None:
    target = disc_target()
    seen = {}

    class Recorder(Oracle):
        def predict(self, embedding, prompts, previous=None):
            seen.setdefault(self.name, prompts.prompts[0])
            return super().predict(embedding, prompts, previous)

    evaluate_interactive({"x": Recorder(target, 2, "x"), "y": Recorder(target, 2, "y")},
                         [("a", image(), target)], modes=["scribbles"], max_interactions=2, seed=3)
    assert seen["x"] == seen["y"]


def test_user_errors() -> None:
    target = disc_target()
    with pytest.raises(MedsegError, match="empty"):
        interaction_curve(Oracle(target, 1), image(), np.zeros(SHAPE, bool), "clicks")
    with pytest.raises(MedsegError, match="do not match"):
        interaction_curve(Oracle(target, 1), np.zeros((1, 8, 8)), target, "clicks")
    with pytest.raises(MedsegError, match="unknown interaction mode"):
        evaluate_interactive({"o": Oracle(target, 1)}, [("a", image(), target)], modes=["lasso"])
    with pytest.raises(MedsegError, match="no case had an object"):
        evaluate_interactive({"o": Oracle(target, 1)}, [("a", image(), np.zeros(SHAPE, bool))])
