"""Evaluation of promptable segmenters with the interaction simulator: Dice after 1..N interactions, NoC@80/85/90,
per (method, mode), written as JSON, CSV and a Dice-vs-interactions plot.

Conventions (RITM, Sofiiuk et al. 2022; ScribblePrompt, Wong et al. 2024):
- interaction ``k`` adds one prompt (a click, a box or a scribble) and the segmenter predicts once, given every
  prompt so far and its own previous probability; ``curve[k - 1]`` is the Dice of ``probability >= 0.5``;
- when the simulator gives no further prompt (``box`` mode after the box, or an exact prediction) the curve stays
  at its last value;
- NoC@t is the smallest ``k`` with Dice >= t, and ``max_interactions`` when it is never reached (capped, as RITM
  reports NoC@90 within 20 clicks); such a case also counts as a failure (``NoF``);
- the simulator's generator for a (case, mode) is seeded by ``(seed, case index, mode index)``, so every method
  meets the same first prompt;
- cases whose target is empty have no object to prompt and are skipped (listed in ``skipped``).
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from medseg.atomic import atomic_write
from medseg.errors import MedsegError
from medseg.interactive.segmenter import Segmenter
from medseg.interactive.simulate import MODES, corrective_prompt, initial_prompts
from medseg.metrics import confusion, dice
from medseg.progress import track

logger = logging.getLogger(__name__)

NOC_THRESHOLDS = (0.80, 0.85, 0.90)
DICE_AT = (1, 3, 5, 10, 20)


@dataclass
class InteractionCurve:
    """One method on one case in one mode: ``dice`` ``(N,)`` after 1..N interactions, ``prompts`` actually
    given (< N when the simulator stopped), seconds to embed and mean seconds per prediction."""

    dice: np.ndarray
    prompts: int
    embed_seconds: float
    predict_seconds: float


def interaction_curve(segmenter: Segmenter, image: np.ndarray, target: np.ndarray, mode: str, *,
                      max_interactions: int = 20, rng: np.random.Generator | None = None,
                      embedding: Any = None) -> InteractionCurve:
    """Simulate ``max_interactions`` interactions of ``mode`` on ``image (C, H, W)`` for ``target (H, W)`` bool.

    The image is embedded once (or ``embedding``, from ``segmenter.embed(image)``, is reused: then
    ``embed_seconds`` is 0); each interaction adds one prompt and predicts with the previous probability.
    """
    if max_interactions < 1:
        raise MedsegError(f"max_interactions is {max_interactions}", fix="ask for at least 1 interaction")
    target = np.asarray(target, dtype=bool)
    if image.ndim != 3 or image.shape[1:] != target.shape:
        raise MedsegError(f"image {image.shape} and target {target.shape} do not match",
                          fix="pass an image (C, H, W) and a target (H, W) on the same grid")
    rng = np.random.default_rng() if rng is None else rng
    prompts = initial_prompts(mode, target, rng)
    if prompts is None:
        raise MedsegError("the target is empty: there is no object to prompt",
                          fix="choose a case or label with an object")
    start = time.perf_counter()
    if embedding is None:
        embedding = segmenter.embed(image)
    embed_seconds = time.perf_counter() - start
    curve = np.zeros(max_interactions, np.float64)
    previous: np.ndarray | None = None
    predict_seconds: list[float] = []
    for index in range(max_interactions):
        if index > 0:
            prompt = corrective_prompt(mode, previous, target, rng)
            if prompt is None:
                curve[index:] = curve[index - 1]
                break
            prompts.add(prompt)
        start = time.perf_counter()
        previous = np.asarray(segmenter.predict(embedding, prompts, previous), dtype=np.float32)
        predict_seconds.append(time.perf_counter() - start)
        if previous.shape != target.shape:
            raise MedsegError(f"{segmenter.name} returned shape {previous.shape} for a {target.shape} image",
                              fix="a segmenter returns a probability on the image's grid")
        curve[index] = dice(confusion(previous >= 0.5, target))
    return InteractionCurve(curve, len(prompts), embed_seconds, float(np.mean(predict_seconds)))


def noc(curve: Sequence[float], threshold: float, max_interactions: int | None = None) -> int:
    """Number of interactions to reach Dice >= ``threshold``: the smallest 1-based ``k`` with ``curve[k-1] >=
    threshold``, or ``max_interactions`` (default ``len(curve)``) when it is never reached."""
    curve = np.asarray(curve, dtype=np.float64)
    cap = len(curve) if max_interactions is None else int(max_interactions)
    reached = np.nonzero(curve[:cap] >= threshold)[0]
    return int(reached[0]) + 1 if len(reached) else cap


@dataclass
class CaseResult:
    method: str
    mode: str
    case_id: str
    dice: list[float]
    prompts: int
    embed_seconds: float
    predict_seconds: float

    def noc(self, threshold: float) -> int:
        return noc(self.dice, threshold)


@dataclass
class Summary:
    """Means over cases for one (method, mode): Dice@k, NoC@t, NoF@t (cases never reaching t) and timings."""

    method: str
    mode: str
    cases: int
    mean_dice: list[float]
    dice_at: dict[str, float]
    noc: dict[str, float]
    failures: dict[str, int]
    embed_seconds: float
    predict_seconds: float


@dataclass
class InteractiveResult:
    """Per-case curves of every (method, mode) and their summaries."""

    max_interactions: int
    seed: int
    cases: list[CaseResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def pairs(self) -> list[tuple[str, str]]:
        """(method, mode) pairs in the order they were run."""
        return list(dict.fromkeys((c.method, c.mode) for c in self.cases))

    def summary(self, method: str, mode: str) -> Summary:
        rows = [c for c in self.cases if c.method == method and c.mode == mode]
        if not rows:
            raise MedsegError(f"no result for method {method!r} in mode {mode!r}",
                              fix=f"use one of {self.pairs()}")
        curves = np.array([c.dice for c in rows])
        mean = curves.mean(axis=0)
        return Summary(
            method=method, mode=mode, cases=len(rows), mean_dice=[float(v) for v in mean],
            dice_at={str(k): float(mean[k - 1]) for k in DICE_AT if k <= self.max_interactions},
            noc={_key(t): float(np.mean([c.noc(t) for c in rows])) for t in NOC_THRESHOLDS},
            failures={_key(t): int(sum(not (np.asarray(c.dice) >= t).any() for c in rows)) for t in NOC_THRESHOLDS},
            embed_seconds=float(np.mean([c.embed_seconds for c in rows])),
            predict_seconds=float(np.mean([c.predict_seconds for c in rows])))

    def summaries(self) -> list[Summary]:
        return [self.summary(method, mode) for method, mode in self.pairs()]

    def to_dict(self) -> dict:
        return {"schema_version": 1, "max_interactions": self.max_interactions, "seed": self.seed,
                "noc_convention": "smallest k with Dice >= t; max_interactions when never reached",
                "summaries": [asdict(s) for s in self.summaries()], "skipped": list(self.skipped),
                "cases": [asdict(c) for c in self.cases]}

    def write(self, folder: str | Path) -> dict[str, Path]:
        """Write ``interactive.json``, ``per_case.csv`` and ``curves.png`` into ``folder``, each atomically."""
        folder = Path(folder)
        paths = {"json": folder / "interactive.json", "csv": folder / "per_case.csv", "plot": folder / "curves.png"}
        text = json.dumps(self.to_dict(), indent=2)
        atomic_write(paths["json"], lambda p: p.write_text(text))
        atomic_write(paths["csv"], self._write_csv)
        atomic_write(paths["plot"], self._write_plot, suffix=".png")
        return paths

    def _write_csv(self, path: Path) -> None:
        steps = range(1, self.max_interactions + 1)
        with open(path, "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["method", "mode", "case_id", "prompts", "embed_seconds", "predict_seconds",
                             *(f"noc{_key(t)}" for t in NOC_THRESHOLDS), *(f"dice_{k}" for k in steps)])
            for c in self.cases:
                writer.writerow([c.method, c.mode, c.case_id, c.prompts, f"{c.embed_seconds:.4f}",
                                 f"{c.predict_seconds:.4f}", *(c.noc(t) for t in NOC_THRESHOLDS),
                                 *(f"{d:.4f}" for d in c.dice)])

    def _write_plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        modes = list(dict.fromkeys(mode for _, mode in self.pairs()))
        figure, axes = plt.subplots(1, max(1, len(modes)), figsize=(4.2 * max(1, len(modes)), 3.6), squeeze=False,
                                    sharey=True)
        steps = np.arange(1, self.max_interactions + 1)
        for axis, mode in zip(axes[0], modes):
            for summary in self.summaries():
                if summary.mode == mode:
                    axis.plot(steps, summary.mean_dice, marker=".", label=f"{summary.method} (n={summary.cases})")
            axis.set_title(mode)
            axis.set_xlabel("interactions")
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            axis.set_ylim(0, 1)
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7, loc="lower right")
        axes[0][0].set_ylabel("mean Dice")
        figure.tight_layout()
        figure.savefig(path, format="png", dpi=100)
        plt.close(figure)


def _key(threshold: float) -> str:
    return str(int(round(100 * threshold)))


def evaluate_interactive(segmenters: Mapping[str, Segmenter], cases: Iterable[tuple[str, np.ndarray, np.ndarray]],
                         *, modes: Sequence[str] = MODES, max_interactions: int = 20, seed: int = 0,
                         progress: bool | None = None) -> InteractiveResult:
    """Run every segmenter in every mode on every case ``(case_id, image (C, H, W), target (H, W) bool)``."""
    if not segmenters:
        raise MedsegError("no segmenter to evaluate", fix="pass a model, baselines or an automatic reference")
    for mode in modes:
        if mode not in MODES:
            raise MedsegError(f"unknown interaction mode {mode!r}", fix=f"use one of {', '.join(MODES)}")
    result = InteractiveResult(max_interactions=int(max_interactions), seed=int(seed))
    for case_index, (case_id, image, target) in enumerate(track(cases, "interactive evaluation", enabled=progress)):
        target = np.asarray(target, dtype=bool)
        if not target.any():
            logger.info("case %s: empty target, skipped", case_id)
            result.skipped.append(case_id)
            continue
        for name, segmenter in segmenters.items():
            start = time.perf_counter()
            embedding = segmenter.embed(image)  # once per case and method, shared by the modes
            embed_seconds = time.perf_counter() - start
            for mode_index, mode in enumerate(modes):
                rng = np.random.default_rng([seed, case_index, mode_index])
                curve = interaction_curve(segmenter, image, target, mode, max_interactions=max_interactions, rng=rng,
                                          embedding=embedding)
                result.cases.append(CaseResult(name, mode, case_id, [float(d) for d in curve.dice], curve.prompts,
                                               embed_seconds, curve.predict_seconds))
    if not result.cases:
        raise MedsegError("no case had an object to prompt", fix="check the labels (--label) and the cases")
    return result
