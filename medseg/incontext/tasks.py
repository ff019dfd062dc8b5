"""Meta-training tasks from dataset folders: every foreground label (or every region where ``dataset.json`` names
regions, as BraTS's whole tumour / tumour core / enhancing) is a task; a 3D volume gives 2D slices along each of
its three axes, and each axis is a task of its own (a structure looks different in each plane); a multi-channel
image that is not RGB gives one task per channel (FLAIR and T1c of BraTS). Slices are windowed and resized to the
model grid once, here, so training reads memory only.

Splits are the interactive model's blocks (``split_case_ids``): the first ``train_fraction`` of each dataset's
sorted case ids train, the rest are held out, so a held-out block is never seen in meta-training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medseg.data.validate import validated_case
from medseg.errors import MedsegError
from medseg.incontext.grid import image_to_grid, mask_to_grid
from medseg.interactive.slices import dataset_block, dataset_objects


@dataclass
class TaskBank:
    """Slices on the model grid: ``images (N, G0, G1)`` float16 in [0, 1], ``masks (N, G0, G1)`` uint8 (soft mask
    x 255), the task and the case each slice belongs to, and per task its name and dataset."""

    images: torch.Tensor
    masks: torch.Tensor
    task: np.ndarray  # (N,) index into task_names
    case: np.ndarray  # (N,) a case number, unique across datasets
    task_names: list[str]  # "dataset/object[/axisA][/chC]"
    task_dataset: np.ndarray  # (T,) index into datasets
    datasets: list[str]
    case_ids: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def usable_tasks(self) -> np.ndarray:
        """Tasks with slices from at least two cases (a target and a support that are not the same case)."""
        return np.array([t for t in range(len(self.task_names))
                         if len(np.unique(self.case[self.task == t])) >= 2], int)


def _channel_views(image: np.ndarray) -> list[tuple[np.ndarray, str]]:
    """``image (C, *S)`` -> [(one-channel ``(1, *S)`` or RGB ``(3, *S)`` image, task suffix)]."""
    if image.shape[0] in (1, 3):
        return [(image, "")]
    return [(image[c:c + 1], f"/ch{c}") for c in range(image.shape[0])]


def _volume_slices(image: np.ndarray, mask: np.ndarray, min_area: int, per_axis: int
                   ) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """``image (C, *S)``, ``mask (*S)`` bool -> [(image (C, H, W), mask (H, W), task suffix)]: a 2D case as is, a 3D
    case ``per_axis`` slices evenly spread over those of each axis holding at least ``min_area`` pixels."""
    if mask.ndim == 2:
        return [(image, mask, "")] if mask.sum() >= min_area else []
    out = []
    for axis in range(3):
        moved, moved_image = np.moveaxis(mask, axis, 0), np.moveaxis(image, axis + 1, 1)
        candidates = np.flatnonzero(moved.reshape(moved.shape[0], -1).sum(1) >= min_area)
        if len(candidates) == 0:
            continue
        chosen = np.unique(candidates[np.linspace(0, len(candidates) - 1, min(per_axis, len(candidates)))
                                      .round().astype(int)])
        out += [(moved_image[:, z], moved[z], f"/axis{axis}") for z in chosen]
    return out


def load_task_bank(roots: Sequence[str | Path], *, part: str = "train", train_fraction: float = 0.8,
                   grid: Sequence[int] = (128, 128), min_area: int = 16, slices_per_axis: int = 4,
                   max_cases: int | None = None) -> TaskBank:
    """Read the ``part`` ("train" or "holdout") block of every dataset in ``roots`` into a ``TaskBank``."""
    images, masks, task_of, case_of, names, used = [], [], [], [], [], {}
    task_index: dict[str, int] = {}
    task_dataset: list[int] = []
    case_number = 0
    for dataset_number, root in enumerate(roots):
        dataset, name, ids = dataset_block(root, part, train_fraction, max_cases)
        names.append(name)
        used[name] = ids
        objects = dataset_objects(dataset.spec)
        for case_id in ids:
            image_file, label_file, _ = validated_case(dataset, dataset.case(case_id))
            label = label_file.array[0]
            for view, channel_suffix in _channel_views(image_file.array.astype(np.float32)):
                for object_name, values in objects.items():
                    for slice_image, slice_mask, suffix in _volume_slices(view, np.isin(label, values), min_area,
                                                                          slices_per_axis):
                        task_name = f"{name}/{object_name}{suffix}{channel_suffix}"
                        if task_name not in task_index:
                            task_index[task_name] = len(task_index)
                            task_dataset.append(dataset_number)
                        images.append(image_to_grid(slice_image, grid)[0].half())
                        masks.append((mask_to_grid(slice_mask, grid)[0] * 255).round().to(torch.uint8))
                        task_of.append(task_index[task_name])
                        case_of.append(case_number)
            case_number += 1
    if not images:
        raise MedsegError(f"no {part} slices with a structure of at least {min_area} pixels in "
                          f"{', '.join(map(str, roots))}", fix="check the labels")
    return TaskBank(torch.stack(images), torch.stack(masks), np.asarray(task_of), np.asarray(case_of),
                    list(task_index), np.asarray(task_dataset), names, used)


def draw_real_task(bank: TaskBank, rng: np.random.Generator, count: int, tasks: np.ndarray | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``count`` slices of one task (dataset uniform, then task uniform): ``images (count, G0, G1)`` float32,
    ``masks (count, G0, G1)`` float32 in [0, 1], the task's name. The first slice is the target; the others
    come from other cases (drawn with replacement when the task has fewer slices than asked)."""
    tasks = bank.usable_tasks() if tasks is None else tasks
    if len(tasks) == 0:
        raise MedsegError("no task has slices from two cases", fix="give datasets with more cases")
    datasets = np.unique(bank.task_dataset[tasks])
    in_dataset = tasks[bank.task_dataset[tasks] == rng.choice(datasets)]
    task = int(rng.choice(in_dataset))
    members = np.flatnonzero(bank.task == task)
    target = int(rng.choice(members))
    others = members[bank.case[members] != bank.case[target]]
    supports = rng.choice(others, size=count - 1, replace=len(others) < count - 1)
    chosen = np.concatenate([[target], supports]).astype(int)
    return bank.images[chosen].float(), bank.masks[chosen].float() / 255, bank.task_names[task]
