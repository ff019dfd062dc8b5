"""Ensembles: folds are averaged inside ``Predictor`` (softmax per window); configurations (e.g. ``2d`` +
``3d_fullres``) by averaging their probability maps on the input grid, here. Also the probability file format.

A probability file ``<case>.npz`` holds ``probabilities`` ``(K, *spatial)`` float16 on the input's grid and
``label_values`` ``(K,)`` (channel ``i`` is the probability of ``label_values[i]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from medseg.atomic import atomic_write
from medseg.errors import MedsegError
from medseg.inference.postprocess import keep_largest_component
from medseg.io import Image


def average_probabilities(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of ``(K, *spatial)`` probability maps (float32), accumulated one at a time."""
    total = np.zeros(maps[0].shape, dtype=np.float32)
    for probabilities in maps:
        if probabilities.shape != total.shape:
            raise MedsegError(f"probability maps of shapes {probabilities.shape} and {total.shape} cannot be "
                              "averaged", fix="ensemble models with the same labels on the same images")
        total += probabilities
    return total / len(maps)


def labels_from_probabilities(probabilities: np.ndarray, label_values: Sequence[int]) -> np.ndarray:
    """``(K, *spatial)`` -> label map ``(*spatial)``: the value of the most probable channel."""
    table = np.asarray(label_values)
    dtype = np.uint8 if table.max() < 256 else np.uint16 if table.max() < 65536 else np.int32
    return table[np.argmax(probabilities, axis=0)].astype(dtype)


class EnsemblePredictor:
    """Average the probabilities of several ``Predictor`` s (one per configuration) and take the argmax.

    Holds the ``(K, *spatial)`` probabilities of one member at a time plus the running sum (not streamed).
    """

    def __init__(self, predictors: Sequence, *, postprocess_labels: Sequence[int] = ()):
        if not predictors:
            raise MedsegError("an ensemble needs at least one model", fix="pass -m once per model")
        values = [list(p.label_values) for p in predictors]
        if any(v != values[0] for v in values):
            raise MedsegError(f"the models predict different labels {values}", fix="ensemble models of one dataset")
        self.predictors = list(predictors)
        self.label_values = values[0]
        self.postprocess_labels = [int(v) for v in postprocess_labels]
        for predictor in self.predictors:  # the ensemble decides post-processing, not its members
            predictor.postprocess_labels = []

    def predict_with_probabilities(self, image: Image) -> tuple[Image, Image]:
        total = None
        for predictor in self.predictors:
            _, probabilities = predictor.predict_with_probabilities(image)
            total = probabilities.array if total is None else np.add(total, probabilities.array, out=total)
        assert total is not None
        total /= len(self.predictors)
        labels = labels_from_probabilities(total, self.label_values)
        if self.postprocess_labels:
            labels = keep_largest_component(labels, self.postprocess_labels)
        return image.with_array(labels[None]), image.with_array(total)

    def predict(self, image: Image) -> Image:
        if len(self.predictors) == 1:
            predictor = self.predictors[0]
            predictor.postprocess_labels = self.postprocess_labels
            return predictor.predict(image)
        return self.predict_with_probabilities(image)[0]


def save_probabilities(path: str | Path, probabilities: np.ndarray, label_values: Sequence[int]) -> Path:
    """Write ``<case>.npz`` atomically (temporary name in the same folder, then renamed)."""
    def write(temporary: Path) -> None:
        np.savez_compressed(temporary, probabilities=probabilities.astype(np.float16),
                            label_values=np.asarray(label_values, dtype=np.int64))

    return atomic_write(path, write)


def load_probabilities(path: str | Path) -> tuple[np.ndarray, list[int]]:
    """``(probabilities (K, *spatial) float32, label_values)`` from a ``<case>.npz``."""
    try:
        with np.load(path) as data:
            return data["probabilities"].astype(np.float32), [int(v) for v in data["label_values"]]
    except (OSError, KeyError, ValueError) as error:
        raise MedsegError(f"not a medseg probability file ({error})", path=path,
                          fix="predict again with --save-probabilities") from None
