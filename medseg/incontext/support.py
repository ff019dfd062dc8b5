"""The support set of in-context segmentation: labelled examples (image + binary mask) of any size, 2D or 3D,
checked once when the set is built (mask on its image's grid, a foreground in every mask, not empty).

A support folder is either the nnU-Net raw layout (``imagesTr/<case>_0000.<ext>`` + ``labelsTr/<case>.<ext>``;
a dataset folder can be a support set as it is) or ``images/<name>.<ext>`` + ``masks/<name>.<ext>``. A mask
marks the structure with any value > 0, or with the value ``label`` when one is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.errors import MedsegError
from medseg.io import (
    SUPPORTED_SUFFIXES,
    Image,
    grid_differences,
    read_image,
    strip_suffix,
)

LAYOUTS = (("imagesTr", "labelsTr"), ("images", "masks"), ("images", "labels"))


@dataclass
class SupportSlice:
    """One 2D example as the model reads it: ``image (C, H, W)`` float32, ``mask (H, W)`` bool, where it came
    from, and (3D) its relative position along the slicing axis (0 first slice .. 1 last)."""

    image: np.ndarray
    mask: np.ndarray
    name: str
    position: float = 0.5


@dataclass
class SupportSet:
    """Labelled examples: ``images[i] (C, *S_i)`` float32, ``masks[i] (*S_i)`` bool, all 2D or all 3D
    (``(Y, X)`` or ``(Z, Y, X)``); sizes may differ between examples. Construction checks every pair."""

    images: list[np.ndarray]
    masks: list[np.ndarray]
    names: list[str]

    def __post_init__(self) -> None:
        if not self.images:
            raise MedsegError("the support set is empty", fix="give at least one image with its mask")
        if len(self.images) != len(self.masks) or len(self.names) != len(self.images):
            raise MedsegError(f"{len(self.images)} support images, {len(self.masks)} masks and "
                              f"{len(self.names)} names", fix="give one mask and one name per image")
        dims = set()
        for image, mask, name in zip(self.images, self.masks, self.names):
            if image.ndim - 1 != mask.ndim or tuple(image.shape[1:]) != tuple(mask.shape):
                raise MedsegError(f"support mask {name} has shape {tuple(mask.shape)}, its image "
                                  f"{tuple(image.shape[1:])}: the mask is on a different grid than its image",
                                  fix="resample the mask onto its image's grid, or pair it with its own image")
            if not mask.any():
                raise MedsegError(f"support mask {name} has no foreground", fix="mark the structure in it, or "
                                  "leave the example out of the support set")
            dims.add(mask.ndim)
        if not dims <= {2, 3} or len(dims) != 1:
            raise MedsegError(f"support examples mix or use unsupported dimensions {sorted(dims)}",
                              fix="give only 2D or only 3D examples")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def spatial_dims(self) -> int:
        return self.masks[0].ndim

    @classmethod
    def from_arrays(cls, images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                    names: Sequence[str] | None = None) -> SupportSet:
        """``images[i]``: ``(C, *S)`` or purely spatial ``(*S)`` (one channel) when it has as many axes as its
        mask; ``masks[i] (*S)``: bool or label maps (> 0 is the structure)."""
        masks = [np.asarray(m) > 0 for m in masks]
        images = [np.asarray(i, np.float32) for i in images]
        images = [i[None] if i.ndim == m.ndim else i for i, m in zip(images, masks)]
        return cls(images, masks, list(names) if names is not None else [f"example {i}" for i in range(len(images))])

    @classmethod
    def from_images(cls, images: Sequence[Image], masks: Sequence[Image], *, label: int | None = None,
                    names: Sequence[str] | None = None) -> SupportSet:
        """Image/mask pairs with geometry: each mask must sample its image's world grid (shape, spacing, origin,
        direction)."""
        names = list(names) if names is not None else [f"example {i}" for i in range(len(images))]
        arrays = []
        for image, mask, name in zip(images, masks, names):
            differences = grid_differences(image, mask)
            if differences:
                raise MedsegError(f"support mask {name} is on a different grid than its image "
                                  f"({'; '.join(differences)})",
                                  fix="resample the mask onto its image's grid, or pair it with its own image")
            arrays.append(mask.array[0] > 0 if label is None else mask.array[0] == label)
        return cls([i.array.astype(np.float32) for i in images], arrays, names)

    @classmethod
    def from_folder(cls, folder: str | Path, *, label: int | None = None) -> SupportSet:
        """Read a support folder (see the module docstring)."""
        images, masks, names = [], [], []
        for image_path, mask_path in support_pairs(folder):
            images.append(read_image(image_path))
            masks.append(read_image(mask_path))
            names.append(str(mask_path))
        return cls.from_images(images, masks, label=label, names=names)

    def slices(self, channel: int | None = None) -> list[SupportSlice]:
        """2D examples: one slice each. 3D examples: every slice along the first array axis (``Z`` of
        ``(Z, Y, X)``) that holds foreground, with its relative position."""
        out = []
        for image, mask, name in zip(self.images, self.masks, self.names):
            if mask.ndim == 2:
                out.append(SupportSlice(image, mask, name))
                continue
            depth = max(mask.shape[0] - 1, 1)
            for z in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(1)):
                out.append(SupportSlice(image[:, z], mask[z], f"{name}[z={z}]", float(z) / depth))
        return out


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if any(p.name.lower().endswith(s) for s in SUPPORTED_SUFFIXES))


def support_pairs(folder: str | Path) -> list[tuple[Path, Path]]:
    """``[(image file, mask file)]`` of a support folder; a folder of neither layout, a mask without its image
    or the reverse is a ``MedsegError`` naming the file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MedsegError("support folder not found", path=folder,
                          fix="pass a folder with imagesTr/ + labelsTr/ or images/ + masks/")
    for image_dir, mask_dir in LAYOUTS:
        if (folder / image_dir).is_dir() and (folder / mask_dir).is_dir():
            break
    else:
        raise MedsegError("not a support folder (no imagesTr/ + labelsTr/, images/ + masks/ or images/ + labels/)",
                          path=folder, fix="put the images and their masks in those subfolders, same names")
    nnunet = image_dir == "imagesTr"
    by_case = {}
    for path in _image_files(folder / image_dir):
        stem = Path(strip_suffix(path)).name
        if nnunet:
            if not stem.endswith("_0000"):
                continue  # further channels of a case: the model reads one grey channel (the first)
            stem = stem[:-5]
        by_case[stem] = path
    pairs = []
    for mask_path in _image_files(folder / mask_dir):
        stem = Path(strip_suffix(mask_path)).name
        if stem not in by_case:
            raise MedsegError("support mask without its image", path=mask_path,
                              fix=f"add {image_dir}/{stem}{'_0000' if nnunet else ''} with the same suffix, "
                                  "or remove the mask")
        pairs.append((by_case.pop(stem), mask_path))
    if by_case:
        first = min(by_case.values())
        raise MedsegError("support image without its mask", path=first,
                          fix=f"add its mask to {mask_dir}/ under the same name, or remove the image")
    if not pairs:
        raise MedsegError("the support set is empty: no image/mask pairs", path=folder,
                          fix=f"put labelled examples in {folder / image_dir} and {folder / mask_dir}")
    return pairs
