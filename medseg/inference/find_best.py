"""``find-best``: choose the configuration, or the ensemble of two, with the best cross-validation Dice.

Reads each model folder's fold validation predictions (``fold_K/validation/<case><ending>`` label maps and, for
ensembles, ``fold_K/validation/<case>.npz`` probabilities) and scores them against the dataset's ``labelsTr``.
The score is nnU-Net's: the mean over foreground classes of the mean Dice over cases. Post-processing is then
decided for the winner (``postprocessing.json``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from medseg.errors import MedsegError
from medseg.inference.ensemble import average_probabilities, labels_from_probabilities, load_probabilities
from medseg.inference.postprocess import class_dice, decide_postprocessing
from medseg.io import image_suffix, read_image, strip_suffix


@dataclass
class Candidate:
    """One configuration or ensemble and its cross-validation Dice (per class and mean)."""

    name: str
    models: list[str]
    num_cases: int
    dice_per_class: dict[str, float] = field(default_factory=dict)
    mean_dice: float = float("nan")


def validation_files(model: str | Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """``(case -> label file, case -> probability file)`` over all ``fold_*/validation/`` folders of ``model``."""
    labels: dict[str, Path] = {}
    probabilities: dict[str, Path] = {}
    for folder in sorted(Path(model).glob("fold_*/validation")):
        for path in sorted(folder.iterdir()):
            if path.name.startswith("."):
                continue
            if path.suffix == ".npz":
                probabilities[path.name[:-4]] = path
            elif image_suffix(path) is not None:
                labels[strip_suffix(path)] = path
    return labels, probabilities


def _references(dataset: str | Path) -> tuple[dict[str, Path], list[int]]:
    from medseg.data import open_dataset

    data = open_dataset(dataset)
    references = {c.case_id: c.label_file for c in data.cases if c.label_file is not None}
    return references, sorted(data.spec.foreground_labels.values())


def _score(pairs: Sequence[tuple[np.ndarray, np.ndarray]], classes: Sequence[int]) -> tuple[dict[str, float], float]:
    per_class = {str(c): float(np.mean([class_dice(p, r, c) for p, r in pairs])) for c in classes}
    return per_class, float(np.mean(list(per_class.values()))) if per_class else float("nan")


def _read_label(path: Path) -> np.ndarray:
    return read_image(path).array[0]


def _pair(prediction: np.ndarray, source: Path, reference: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(prediction, reference)`` label maps; a ``MedsegError`` when they are not of one grid (the model was
    trained on another dataset than ``-d``'s)."""
    truth = _read_label(reference)
    if prediction.shape != truth.shape:
        raise MedsegError(f"the validation prediction {source} has shape {prediction.shape}, its reference "
                          f"{truth.shape}", path=reference,
                          fix="pass with -d the dataset these models were trained on")
    return prediction, truth


def _model_pairs(model: Path, references: dict[str, Path]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    labels, _ = validation_files(model)
    cases = sorted(set(labels) & set(references))
    return {case: _pair(_read_label(labels[case]), labels[case], references[case]) for case in cases}


def _ensemble_pairs(models: Sequence[Path], references: dict[str, Path]
                    ) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    files = [validation_files(m)[1] for m in models]
    cases = sorted(set(references).intersection(*[set(f) for f in files]))
    if not cases:
        return None
    pairs = {}
    for case in cases:
        loaded = [load_probabilities(f[case]) for f in files]
        values = loaded[0][1]
        if any(v != values for _, v in loaded):
            raise MedsegError("models predict different labels", path=files[0][case],
                              fix="ensemble models of one dataset")
        prediction = labels_from_probabilities(average_probabilities([p for p, _ in loaded]), values)
        pairs[case] = _pair(prediction, files[0][case], references[case])
    return pairs


def find_best(models: Sequence[str | Path], dataset: str | Path, *, ensembles: bool = True) -> dict:
    """Score every model and (with ``ensembles``) every pair of models; decide post-processing for the best.

    Returns the ``find_best.json`` content: ``candidates`` (best first), ``best`` and ``postprocessing``.
    """
    models = [Path(m) for m in models]
    for model in models:
        if not (model / "model.json").is_file():
            raise MedsegError("not a medseg model folder (no model.json)", path=model,
                              fix="pass the folders that medseg train wrote")
    references, classes = _references(dataset)
    candidates: list[tuple[Candidate, dict]] = []
    for model in models:
        pairs = _model_pairs(model, references)
        if pairs:
            candidates.append((Candidate(model.name, [str(model)], len(pairs)), pairs))
    if ensembles:
        for first, second in itertools.combinations(models, 2):
            pairs = _ensemble_pairs([first, second], references)
            if pairs:
                candidates.append((Candidate(f"{first.name}+{second.name}", [str(first), str(second)], len(pairs)),
                                   pairs))
    if not candidates:
        raise MedsegError("no validation predictions found", path=models[0],
                          fix="train with validation (fold_K/validation/ holds the fold's predictions)")
    for candidate, pairs in candidates:
        candidate.dice_per_class, candidate.mean_dice = _score(list(pairs.values()), classes)
    candidates.sort(key=lambda item: -item[0].mean_dice)
    best, best_pairs = candidates[0]
    decision = decide_postprocessing(list(best_pairs.values()), classes)
    return {"schema_version": 1, "dataset": str(dataset), "classes": classes,
            "candidates": [vars(c) for c, _ in candidates], "best": vars(best), "postprocessing": decision}
