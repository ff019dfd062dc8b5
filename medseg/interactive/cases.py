"""Evaluation cases for promptable segmentation from dataset folders: one 2D slice and one object per case.

A 2D case is used as is; a 3D case gives its axial slice (first spatial axis, ``Z`` in ``(Z, Y, X)``) with the
largest object area. The object is ``label == label`` or, with ``label=None``, every foreground label (> 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from medseg.errors import MedsegError

Case2D = tuple[str, np.ndarray, np.ndarray]  # (case id, image (C, H, W) float32, target (H, W) bool)


def object_slice(image: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, int | None]:
    """``image (C, Z, Y, X)``, ``target (Z, Y, X)`` bool -> the slice with the most object pixels
    (``(C, Y, X)``, ``(Y, X)``, its index); a 2D ``(C, H, W)`` / ``(H, W)`` pair is returned as is (index None)."""
    if target.ndim == 2:
        return image, target, None
    areas = target.reshape(target.shape[0], -1).sum(axis=1)
    index = int(np.argmax(areas))
    return image[:, index], target[index], index


def select_cases(case_ids: Sequence[str], selection: str | None) -> list[str]:
    """``selection``: None (all), a count ``"N"`` (the first N) or comma-separated case ids."""
    if selection is None or not selection.strip():
        return list(case_ids)
    if selection.strip().isdigit():
        return list(case_ids)[: int(selection)]
    wanted = [s.strip() for s in selection.split(",") if s.strip()]
    unknown = [w for w in wanted if w not in case_ids]
    if unknown:
        raise MedsegError(f"unknown case ids {', '.join(unknown)}", fix="use ids from labelsTr or a count")
    return wanted


def dataset_cases(roots: Sequence[str | Path], *, label: int | None = None, cases: str | None = None
                  ) -> Iterator[Case2D]:
    """Yield ``(case_id, image (C, H, W) float32, target (H, W) bool)`` for the selected cases of each dataset
    (``cases`` as in ``select_cases``, applied per dataset). Ids are prefixed with the dataset folder's name when
    several datasets are given. Each case is checked as it is read (``medseg check``'s checks): a bad case is a
    ``MedsegError`` naming its file."""
    from medseg.data import open_dataset
    from medseg.data.validate import validated_case

    datasets = [open_dataset(root).require_cases() for root in roots]
    if label is not None:
        for dataset in datasets:
            if label not in dataset.spec.labels.values():
                raise MedsegError(f"label {label} is not in dataset.json ({dataset.spec.labels})",
                                  path=dataset.root / "dataset.json", fix="pass one of its label values to --label")
    for dataset in datasets:
        by_id = {case.case_id: case for case in dataset.cases}
        for case_id in select_cases(list(by_id), cases):
            case = by_id[case_id]
            image_file, label_file, _ = validated_case(dataset, case)  # checked as medseg check does
            labels = label_file.array[0]
            target = labels > 0 if label is None else labels == label
            image, target, _ = object_slice(image_file.array.astype(np.float32), target)
            name = f"{dataset.root.name}/{case_id}" if len(datasets) > 1 else case_id
            yield name, image, target
