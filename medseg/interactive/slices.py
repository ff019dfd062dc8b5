"""Training and held-out slices for the promptable model, from datasets in the nnU-Net / MSD layouts.

Every case gives one binary object per foreground label, or per region where ``dataset.json`` names regions
(BraTS: whole tumour, tumour core, enhancing). 2D cases give one slice per object; 3D volumes give the axial
slices (first array axis) where the object covers at least ``min_area`` pixels, every ``slice_step``-th of them.
Images are normalised (``normalize_channels``) and resized to the model grid once, here, so training reads
memory only.

Splits are blocks, not random: the first ``train_fraction`` of the sorted case ids train, the rest are held out
(neighbouring CVC-ClinicDB frames are near-duplicates, so a random split would leak).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from medseg.data import open_dataset
from medseg.data.validate import validated_case
from medseg.errors import MedsegError
from medseg.interactive.predictor import normalize_channels, resize


def split_case_ids(case_ids: Sequence[str], train_fraction: float) -> tuple[list[str], list[str]]:
    """Sorted ids -> (first ``train_fraction``, the rest); at least one case on each side when there are two."""
    ids = sorted(case_ids)
    if not 0 < train_fraction <= 1:
        raise MedsegError(f"train fraction must be in (0, 1], not {train_fraction}")
    cut = int(round(train_fraction * len(ids)))
    if len(ids) >= 2:
        cut = min(max(cut, 1), len(ids) - 1) if train_fraction < 1 else len(ids)
    return ids[:cut], ids[cut:]


def dataset_block(root: str | Path, part: str, train_fraction: float, max_cases: int | None = None):
    """``(dataset, folder name, case ids)`` of the ``part`` block ("train" or "holdout") of the dataset at
    ``root``: at most ``max_cases`` ids of the block, in sorted order."""
    if part not in ("train", "holdout"):
        raise MedsegError(f"part must be 'train' or 'holdout', not {part!r}")
    dataset = open_dataset(root).require_cases()
    train_ids, holdout_ids = split_case_ids([c.case_id for c in dataset.cases], train_fraction)
    return dataset, Path(root).resolve().name, (train_ids if part == "train" else holdout_ids)[:max_cases]


def dataset_objects(spec) -> dict[str, list[int]]:
    """Object name -> the label values it unites: the dataset's regions, else each foreground label."""
    if spec.regions:
        return {name: list(values) for name, values in spec.regions.items()}
    return {name: [value] for name, value in spec.foreground_labels.items()}


@dataclass
class SliceBank:
    """Slices on the model grid: ``images (N, Ci, G0, G1)`` float16 in [0, 1], ``targets (N, G0, G1)`` bool, and
    which dataset, case, object and slice each came from."""

    images: torch.Tensor
    targets: torch.Tensor
    dataset: np.ndarray  # (N,) int: index into ``datasets``
    sources: list[str]  # "dataset/case/object[/z]"
    datasets: list[str]
    case_ids: dict[str, list[str]] = field(default_factory=dict)  # dataset -> the case ids used

    def __len__(self) -> int:
        return len(self.sources)


def _object_slices(image: np.ndarray, mask: np.ndarray, min_area: int, slice_step: int
                   ) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """``image (C, *S)``, ``mask (*S)`` bool -> [(image (C, H, W), mask (H, W), suffix)] for 2D or 3D."""
    if mask.ndim == 2:
        return [(image, mask, "")] if mask.sum() >= min_area else []
    areas = mask.reshape(mask.shape[0], -1).sum(1)
    chosen = np.flatnonzero(areas >= min_area)[::slice_step]
    return [(image[:, z], mask[z], f"/z{z}") for z in chosen]


def load_slices(roots: Sequence[str | Path], *, part: str = "train", train_fraction: float = 0.8,
                grid: Sequence[int] = (128, 128), channels: int = 3, min_area: int = 16, slice_step: int = 2,
                max_cases: int | None = None) -> SliceBank:
    """Read the ``part`` ("train" or "holdout") of every dataset in ``roots`` into a ``SliceBank``."""
    images, targets, dataset_index, sources, names, used = [], [], [], [], [], {}
    for index, root in enumerate(roots):
        dataset, name, ids = dataset_block(root, part, train_fraction, max_cases)
        names.append(name)
        used[name] = ids
        objects = dataset_objects(dataset.spec)
        for case_id in ids:
            case = dataset.case(case_id)
            image_file, label_file, _ = validated_case(dataset, case)  # checked as medseg check does
            image, label = image_file.array, label_file.array[0]
            for object_name, values in objects.items():
                mask = np.isin(label, values)
                for slice_image, slice_mask, suffix in _object_slices(image, mask, min_area, slice_step):
                    array = torch.from_numpy(normalize_channels(slice_image, channels))[None]
                    images.append(resize(array, grid)[0].half())
                    target = torch.from_numpy(slice_mask.astype(np.float32))[None, None]
                    targets.append(F.interpolate(target, size=tuple(grid), mode="bilinear",
                                                 align_corners=False)[0, 0] >= 0.5)
                    dataset_index.append(index)
                    sources.append(f"{name}/{case_id}/{object_name}{suffix}")
    if not images:
        raise MedsegError(f"no {part} slices with an object of at least {min_area} pixels in "
                          f"{', '.join(map(str, roots))}", fix="check the labels or lower --min-area")
    return SliceBank(torch.stack(images), torch.stack(targets), np.asarray(dataset_index), sources, names, used)
