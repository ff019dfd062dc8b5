"""Post-processing: keep the largest connected component of a class, only for the classes where
cross-validation shows that it raises the Dice.

The decision is recorded in the model folder as ``postprocessing.json``::

    {"schema_version": 1, "keep_largest_component": [1], "dice_before": {"1": 0.81, "2": 0.6},
     "dice_after": {"1": 0.84, "2": 0.58}, "num_cases": 5}
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from medseg.config import read_json, write_json_atomic

FILE_NAME = "postprocessing.json"
SCHEMA_VERSION = 1


def keep_largest_component(labels: np.ndarray, classes: Sequence[int], *, connectivity: int | None = None
                           ) -> np.ndarray:
    """``labels`` ``(*spatial)`` integer map; for each value in ``classes`` every voxel outside its largest
    connected component (full connectivity: 26 in 3D, 8 in 2D) becomes 0. Returns a new array."""
    import cc3d

    out = labels.copy()
    connectivity = connectivity or (26 if labels.ndim == 3 else 8)
    for value in classes:
        mask = labels == value
        if not mask.any():
            continue
        components = cc3d.connected_components(mask, connectivity=connectivity)
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        out[mask & (components != int(np.argmax(sizes)))] = 0
    return out


def class_dice(prediction: np.ndarray, reference: np.ndarray, value: int) -> float:
    """Dice of one label value (1.0 when both are empty)."""
    from medseg.metrics import confusion, dice

    return dice(confusion(prediction == value, reference == value))


def decide_postprocessing(pairs: Sequence[tuple[np.ndarray, np.ndarray]], classes: Sequence[int]) -> dict:
    """Compare mean cross-validation Dice per class with and without the largest-component filter.

    ``pairs`` are ``(prediction, reference)`` label maps ``(*spatial)``. A class is post-processed only when its
    mean Dice improves strictly. Returns the ``postprocessing.json`` content.
    """
    before = {int(c): [] for c in classes}
    after = {int(c): [] for c in classes}
    for prediction, reference in pairs:
        for value in before:
            before[value].append(class_dice(prediction, reference, value))
            filtered = keep_largest_component(prediction, [value])
            after[value].append(class_dice(filtered, reference, value))
    mean_before = {c: float(np.mean(v)) if v else float("nan") for c, v in before.items()}
    mean_after = {c: float(np.mean(v)) if v else float("nan") for c, v in after.items()}
    chosen = [c for c in before if mean_after[c] > mean_before[c]]
    return {"schema_version": SCHEMA_VERSION, "keep_largest_component": chosen,
            "dice_before": {str(c): v for c, v in mean_before.items()},
            "dice_after": {str(c): v for c, v in mean_after.items()}, "num_cases": len(pairs)}


def write_postprocessing(model: str | Path, decision: dict) -> Path:
    path = Path(model) / FILE_NAME
    write_json_atomic(decision, path)
    return path


def read_postprocessing(model: str | Path) -> list[int]:
    """Labels to post-process according to ``model``'s ``postprocessing.json`` (none when it is absent)."""
    path = Path(model) / FILE_NAME
    if not path.is_file():
        return []
    return [int(v) for v in read_json(path).get("keep_largest_component", [])]
