"""The cascade's extra input: a previous stage's label map as one-hot channels on the next stage's grid.

``3d_cascade_fullres`` reads the image together with the ``3d_lowres`` model's prediction of it, as nnU-Net's
cascade does: the prediction (a label map on the input image's own grid, e.g. a cross-validation prediction from
``fold_K/validation/`` or what the first stage predicts at inference) is cropped with the image's content box,
resampled to the configuration's grid like a label map (one-hot linear, arg-max) and stacked as one channel per
foreground label, 1 inside the label and 0 outside.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from medseg.errors import MedsegError
from medseg.preprocess.resample import resample_label


def previous_stage_channels(previous: np.ndarray, bbox: Sequence[Sequence[int]], shape: Sequence[int],
                            foreground: Sequence[int], *, separate_z: bool = False) -> np.ndarray:
    """``previous`` ``(1, *spatial)`` integer labels on the input grid -> ``(F, *shape)`` float32 one-hot of the
    ``F = len(foreground)`` labels, cropped to ``bbox`` (``[[start, stop], ...]`` per axis) and resampled."""
    crop = (slice(None),) + tuple(slice(a, b) for a, b in bbox)
    labels = resample_label(np.asarray(previous)[crop], tuple(shape), separate_z=separate_z)
    return np.stack([(labels[0] == value) for value in foreground]).astype(np.float32)


def check_previous_stage(previous: np.ndarray, image_shape: Sequence[int], *, source: object = None) -> None:
    """A MedsegError when the previous stage's label map ``(1, *spatial)`` is not on the image's grid."""
    if previous.ndim != len(image_shape) + 1 or tuple(previous.shape[1:]) != tuple(image_shape):
        raise MedsegError(f"the previous stage's prediction has shape {tuple(previous.shape[1:])}, the image "
                          f"{tuple(image_shape)}", path=source,
                          fix="use the first stage's predictions of these very images (same grid)")


@dataclass
class PreviousStage:
    """The first stage's label map of each case, for preprocessing a cascade's training cases.

    ``files``: case id -> label file on that case's image grid (the first stage's cross-validation predictions:
    each case predicted by the fold that did not train on it). ``labels``: the foreground label values, one
    channel each."""

    files: dict[str, Path]
    labels: list[int]

    def record(self, case_id: str) -> dict[str, object]:
        """What the cache keeps of the file a case was preprocessed from (a newer prediction redoes the case)."""
        path = self._file(case_id)
        status = path.stat()
        return {"file": str(path.resolve()), "bytes": status.st_size, "mtime_ns": status.st_mtime_ns}

    def read(self, case_id: str) -> np.ndarray:
        """``(1, *spatial)`` integer label map."""
        from medseg.io import read_image

        return read_image(self._file(case_id)).array

    def _file(self, case_id: str) -> Path:
        if case_id not in self.files:
            raise MedsegError(f"case '{case_id}' has no prediction of the previous stage",
                              fix="train every fold of the first stage with validation, so that each case has a "
                              "cross-validation prediction in fold_K/validation/")
        return self.files[case_id]
