"""A classical method fitted to a dataset: its parameters chosen by a small search on labelled training cases, and
the map from its brightness ranks to the dataset's labels; ``ClassicalModel.predict`` segments an image as the
learned ``Predictor`` does (a label map on the image's own grid), so ``medseg.inference.run.predict_cases`` writes
its outputs.

The fit (``fit_classical``): on ``cases`` training cases, evenly spaced over the sorted ids, every parameter
combination of ``methods.SEARCH`` partitions each image into brightness ranks; the voxel counts of (rank, reference
label) over the cases give, for each of the (labels ^ ranks) maps from ranks to labels, every case's Dice per
foreground label (``medseg.metrics``' Dice and its empty-mask conventions); the combination and map with the best
mean per-case foreground Dice win (the first on ties).
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from medseg.classical.features import content_mask, normalise
from medseg.classical.methods import SEARCH, SINGLE_CHANNEL, method_function
from medseg.errors import MedsegError
from medseg.io import Image

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ChannelCount:
    """The one input check a classical method makes (``check_image``, as ``Predictor`` has it): the image has the
    training images' number of channels."""

    channels: int

    def check_image(self, image: Image) -> None:
        if image.num_channels != self.channels:
            sources = image.metadata.get("source_files") or []
            raise MedsegError(f"the image has {image.num_channels} channel(s), the dataset's images have "
                              f"{self.channels}", path=", ".join(map(str, sources)) or None,
                              fix="pass one file per channel (<case>_0000, <case>_0001, ...) in the training order")


@dataclass
class ClassicalModel:
    """``method`` with ``params``; rank ``r`` of its partition becomes label ``rank_labels[r]``."""

    method: str
    params: dict[str, Any]
    rank_labels: list[int]
    label_values: list[int]
    channels: int
    train_dice: float
    train_cases: list[str]
    search: list[dict] = field(default_factory=list)  # every combination tried: params, mean Dice, rank labels
    seconds: float = 0.0
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, *, path: Path | None = None) -> "ClassicalModel":
        if data.get("schema_version") != SCHEMA_VERSION:
            raise MedsegError(f"classical model schema {data.get('schema_version')!r}, expected {SCHEMA_VERSION}",
                              path=path, fix="fit it again with medseg classical")
        return cls(**data)

    def check_image(self, image: Image) -> None:
        """A MedsegError when ``image`` has another channel count than the training images."""
        ChannelCount(self.channels).check_image(image)

    def ranks(self, image: Image) -> np.ndarray:
        """The method's brightness ranks ``(*S)`` int32 of ``image (C, *S)``."""
        return method_ranks(self.method, image.array, self.params)

    def predict(self, image: Image) -> Image:
        """Label map ``(1, *S)`` on exactly ``image``'s grid."""
        self.check_image(image)
        from medseg.inference.restore import label_lookup

        lookup = np.asarray(self.rank_labels, dtype=np.int64)
        ranks = np.clip(self.ranks(image), 0, len(lookup) - 1)
        _, dtype = label_lookup(self.label_values)  # the label maps' dtype, as the predictor chooses it
        return image.with_array(lookup[ranks].astype(dtype)[None])


def method_ranks(method: str, array: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """``method``'s ranks ``(*S)`` of an image array ``(C, *S)``: its content found (``features.content_mask``),
    normalised over it, the voxels outside it rank 0."""
    content = content_mask(array)
    return method_function(method)(normalise(array, content), content=content, **params)


def search_space(method: str, channels: int) -> list[dict[str, Any]]:
    """Every parameter combination tried for ``method`` on images of ``channels`` channels."""
    grid = dict(SEARCH[method])
    if method in SINGLE_CHANNEL and channels > 1:
        grid["channel"] = list(range(channels))
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def rank_label_counts(ranks: np.ndarray, reference: np.ndarray, label_values: list[int]) -> np.ndarray:
    """``(ranks, labels + 1)`` voxel counts of (rank, reference label); the last column counts reference values
    that are not among ``label_values`` (never predicted, never scored)."""
    index = np.full(int(max(reference.max(), max(label_values))) + 1, len(label_values), np.int64)
    index[label_values] = np.arange(len(label_values))
    columns = len(label_values) + 1
    rows = int(ranks.max()) + 1
    flat = ranks.astype(np.int64).ravel() * columns + index[reference.ravel()]
    return np.bincount(flat, minlength=rows * columns).reshape(rows, columns)


def mapping_dice(counts: list[np.ndarray], mapping: tuple[int, ...], label_values: list[int]) -> list[float]:
    """Per case, the mean foreground Dice (``medseg.metrics.dice``; NaN labels left out) when rank ``r`` is label
    index ``mapping[r]``; ``counts``: each case's ``rank_label_counts``."""
    from medseg.metrics.overlap import Confusion, dice

    scores = []
    for table in counts:
        total = int(table.sum())
        per_label = []
        for j in range(1, len(label_values)):
            rows = [r for r in range(len(table)) if r < len(mapping) and mapping[r] == j]
            tp = int(table[rows, j].sum())
            predicted = int(table[rows].sum())
            reference = int(table[:, j].sum())
            value = dice(Confusion(tp=tp, fp=predicted - tp, fn=reference - tp,
                                   tn=total - predicted - reference + tp))
            if math.isfinite(value):
                per_label.append(value)
        scores.append(float(np.mean(per_label)) if per_label else math.nan)
    return scores


def best_mapping(counts: list[np.ndarray], ranks: int, label_values: list[int]) -> tuple[tuple[int, ...], float]:
    """The map from ``ranks`` ranks to label indices with the best mean per-case Dice, and that Dice (exhaustive:
    at most labels ^ ranks maps; the all-background map is not a segmentation and is skipped)."""
    best, best_score = tuple([0] * ranks), -1.0
    for mapping in itertools.product(range(len(label_values)), repeat=ranks):
        if not any(mapping):
            continue
        scores = [s for s in mapping_dice(counts, mapping, label_values) if math.isfinite(s)]
        score = float(np.mean(scores)) if scores else 0.0
        if score > best_score:
            best, best_score = mapping, score
    return best, max(best_score, 0.0)


def fit_classical(dataset_root: str | Path, method: str, *, cases: int = 8,
                  log: Callable[[str], None] | None = None) -> ClassicalModel:
    """``method`` fitted on ``cases`` labelled training cases of the dataset at ``dataset_root`` (evenly spaced
    over the sorted ids; each read and checked as training reads it: a bad case is a MedsegError)."""
    from medseg.data import open_dataset
    from medseg.data.validate import validated_case

    method_function(method)
    if cases < 1:
        raise MedsegError(f"--tune-cases {cases} is not positive", fix="tune on 1 or more training cases")
    start = time.time()
    dataset = open_dataset(dataset_root).require_cases()
    ordered = sorted(dataset.cases, key=lambda c: c.case_id)
    chosen = [ordered[i] for i in sorted({int(round(i)) for i in np.linspace(0, len(ordered) - 1, cases)})]
    label_values = [int(v) for v in dataset.spec.label_values]
    images, references = [], []
    for case in chosen:
        image, label, _ = validated_case(dataset, case)
        images.append(image)
        references.append(np.asarray(label.array[0]).astype(np.int64))
    channels = images[0].num_channels
    search, best = [], None
    for params in search_space(method, channels):
        counts = [rank_label_counts(method_ranks(method, image.array, params), reference, label_values)
                  for image, reference in zip(images, references)]
        rows = max(len(c) for c in counts)
        counts = [np.pad(c, ((0, rows - len(c)), (0, 0))) for c in counts]
        mapping, score = best_mapping(counts, rows, label_values)
        entry = {"params": params, "train_dice": score, "rank_labels": [label_values[j] for j in mapping]}
        search.append(entry)
        if log:
            log(f"  {method} {params}: training Dice {score:.4f}")
        if best is None or score > best["train_dice"]:
            best = entry
    assert best is not None
    return ClassicalModel(method=method, params=best["params"], rank_labels=best["rank_labels"],
                          label_values=label_values, channels=channels, train_dice=best["train_dice"],
                          train_cases=[c.case_id for c in chosen], search=search,
                          seconds=round(time.time() - start, 2))


def read_classical_model(path: str | Path) -> ClassicalModel:
    """A fitted model from its JSON file (``classical.json``)."""
    import json

    path = Path(path)
    try:
        return ClassicalModel.from_dict(json.loads(path.read_text()), path=path)
    except (OSError, ValueError, TypeError) as error:
        raise MedsegError(f"not a classical model file ({error})", path=path,
                          fix="pass the classical.json that medseg classical wrote") from None
