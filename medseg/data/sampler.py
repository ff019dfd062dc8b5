"""Patch sampling over a preprocessed cache: where each patch of a batch lies, and reading it from memory maps.

Foreground oversampling as in nnU-Net v2: the last ``ceil(B * foreground_fraction)`` patches of every batch
are centred on a voxel of a foreground class, the class drawn uniformly among the classes present in that
case (from its ``<case>_locations.npz``); the other patches lie uniformly where the unrotated patch fits in
the image (centred, zero-padded, where the image is smaller than the patch). A 2D patch ``(Y, X)`` over a 3D
cache ``(C, Z, Y, X)`` takes one z slice (nnU-Net's 2d configuration); with ``slice_context`` h (2.5D) it takes
the ``k = 1 + 2h`` slices around it as channels, ``(C * k, Y, X)`` channel-major, the edge slice repeated past the
volume's ends, and the label of the centre slice.

For a spatially augmented patch the sampler reads exactly the box its sampling grid needs
(``transforms.spatial.grid_bounds``), zero-padded outside the image; the transform then resamples it to the
final patch size, so the crop to the final size is part of the resampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from medseg.errors import MedsegError
from medseg.data.cache import CachedCase, cached_case_ids, read_case
from medseg.transforms.pipeline import SampledBatch
from medseg.transforms.random import SpatialParams
from medseg.transforms.spatial import grid_bounds


@dataclass
class Pick:
    """One patch location: ``lower`` ``(d,)`` first voxel of the final patch along the patch axes; ``slice_index``
    the z slice for 2D patches of 3D data (else None); ``forced_class`` the class it was centred on, if any."""

    case_id: str
    lower: np.ndarray
    slice_index: int | None
    forced_class: int | None


class PatchSampler:
    """Chooses and reads patches of ``patch_size`` ``(Y, X)`` or ``(Z, Y, X)`` from a cache folder.

    Cases are opened lazily as memory maps and kept open (a memory map costs address space, not RAM).
    """

    def __init__(self, folder: str | Path, patch_size: Sequence[int], *, case_ids: Sequence[str] | None = None,
                 foreground_fraction: float = 1 / 3, slice_context: int = 0):
        self.folder = Path(folder)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.case_ids = list(case_ids) if case_ids is not None else cached_case_ids(self.folder)
        if not self.case_ids:
            raise MedsegError("no complete cases in the cache folder", path=self.folder,
                              fix="run medseg preprocess first")
        if not 0.0 <= foreground_fraction <= 1.0:
            raise MedsegError(f"foreground_fraction={foreground_fraction} is not in [0, 1]", fix="use e.g. 1/3")
        self.foreground_fraction = foreground_fraction
        self._cases: dict[str, CachedCase] = {}
        data = self.case(self.case_ids[0]).data
        self.slice_axis = data.ndim - 1 == len(self.patch_size) + 1
        if data.ndim - 1 not in (len(self.patch_size), len(self.patch_size) + 1):
            raise MedsegError(f"patch size {self.patch_size} does not fit cached arrays of shape {data.shape}",
                              path=self.folder, fix="use a patch with as many axes as the data (or 2D on 3D)")
        if slice_context < 0 or (slice_context and not self.slice_axis):
            raise MedsegError(f"slice_context={slice_context} needs 2D patches of 3D data and a count >= 0",
                              path=self.folder, fix="use slice_context=0, or a 2D patch over a 3D cache")
        self.slice_context = int(slice_context)
        self.num_channels = int(data.shape[0]) * (1 + 2 * self.slice_context)

    def __getstate__(self) -> dict:
        # open memory maps would be pickled as full copies for spawned workers: reopen them there instead
        return {**self.__dict__, "_cases": {}}

    def case(self, case_id: str) -> CachedCase:
        if case_id not in self._cases:
            self._cases[case_id] = read_case(self.folder, case_id, mmap=True)
        return self._cases[case_id]

    def forced_count(self, batch_size: int) -> int:
        """How many patches of a batch are centred on foreground: ``ceil(B * foreground_fraction)``."""
        return math.ceil(batch_size * self.foreground_fraction - 1e-9)

    def choose(self, batch_size: int, rng: np.random.Generator) -> list[Pick]:
        """Locations of one batch; the last ``forced_count`` are centred on foreground where a case has any."""
        first_forced = batch_size - self.forced_count(batch_size)
        picks = []
        for position in range(batch_size):
            case_id = self.case_ids[int(rng.integers(len(self.case_ids)))]
            picks.append(self._pick(case_id, position >= first_forced, rng))
        return picks

    def _pick(self, case_id: str, forced: bool, rng: np.random.Generator) -> Pick:
        case = self.case(case_id)
        shape = case.data.shape[1:]
        classes = sorted(v for v, loc in case.class_locations.items() if v > 0 and len(loc) > 0)
        patch = np.array(self.patch_size)
        if forced and classes:
            chosen = classes[int(rng.integers(len(classes)))]
            locations = case.class_locations[chosen]
            voxel = np.asarray(locations[int(rng.integers(len(locations)))], dtype=np.int64)
            slice_index = int(voxel[0]) if self.slice_axis else None
            in_plane = voxel[1:] if self.slice_axis else voxel
            return Pick(case_id, in_plane - patch // 2, slice_index, chosen)
        slice_index = int(rng.integers(shape[0])) if self.slice_axis else None
        plane = np.array(shape[1:] if self.slice_axis else shape)
        lower = np.where(plane >= patch, 0, -((patch - plane) // 2))
        room = np.maximum(plane - patch, 0)
        lower = lower + np.array([int(rng.integers(r + 1)) for r in room])
        return Pick(case_id, lower, slice_index, None)

    def extract(self, picks: Sequence[Pick], spatial: SpatialParams | None = None) -> SampledBatch:
        """Read the patches (plain) or the regions the spatial transform needs (``spatial.active`` samples)."""
        active = [False] * len(picks) if spatial is None else [bool(a) for a in spatial.active]
        plain_index = [i for i, a in enumerate(active) if not a]
        warp_index = [i for i, a in enumerate(active) if a]
        patch = np.array(self.patch_size)
        plain_image, plain_label = self._read_boxes([picks[i] for i in plain_index],
                                                    [picks[i].lower for i in plain_index], patch)
        batch = SampledBatch([p.case_id for p in picks], self.patch_size, plain_image, plain_label, plain_index)
        if warp_index:
            params = spatial.select(warp_index)
            centers = torch.tensor(np.stack([picks[i].lower for i in warp_index]) + (patch - 1) / 2)
            lo, hi = grid_bounds(params.matrices, centers, self.patch_size, params.elastic_magnitude)
            region = (hi - lo).max(axis=0)
            image, label = self._read_boxes([picks[i] for i in warp_index], list(lo), region, hi - lo)
            batch.region_image, batch.region_label = image, label
            batch.region_centers = centers - torch.from_numpy(lo).double()
            batch.warp_index, batch.spatial = warp_index, params
        return batch

    def _read_boxes(self, picks: Sequence[Pick], lowers: Sequence[np.ndarray], shape: np.ndarray,
                    sizes: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes ``[lower, lower + size)`` into zero-filled ``(N, C, *shape)`` float32 / ``(N, 1, *shape)`` int8."""
        shape = tuple(int(s) for s in shape)
        image = np.zeros((len(picks), self.num_channels, *shape), dtype=np.float32)
        label = np.zeros((len(picks), 1, *shape), dtype=np.int8)
        for i, pick in enumerate(picks):
            size = np.array(shape) if sizes is None else sizes[i]
            case = self.case(pick.case_id)
            data, seg = case.data, case.seg
            if pick.slice_index is not None:
                data, seg = self._slice_stack(data, pick.slice_index), seg[:, pick.slice_index]
            _copy_box(data, np.asarray(lowers[i]), size, image[i])
            _copy_box(seg, np.asarray(lowers[i]), size, label[i])
        return torch.from_numpy(image), torch.from_numpy(label)

    def _slice_stack(self, data: np.ndarray, index: int) -> np.ndarray:
        """Slice ``index`` of ``(C, Z, Y, X)`` with ``slice_context`` neighbours each side: ``(C * k, Y, X)``."""
        if not self.slice_context:
            return data[:, index]
        h = self.slice_context
        indices = np.clip(np.arange(index - h, index + h + 1), 0, data.shape[1] - 1)
        first, last = int(indices[0]), int(indices[-1])
        stack = np.asarray(data[:, first:last + 1])[:, indices - first]  # one contiguous read, then repeat edges
        return stack.reshape(-1, *stack.shape[2:])


def _copy_box(source: np.ndarray, lower: np.ndarray, size: np.ndarray, target: np.ndarray) -> None:
    """Copy ``source[:, lower:lower+size]`` (``(C, *S)``, clipped to the array) into ``target[:, :size]``."""
    spatial = np.array(source.shape[1:])
    start = np.clip(lower, 0, spatial)
    stop = np.clip(lower + size, 0, spatial)
    if np.any(stop <= start):
        return
    offset = start - lower
    src = (slice(None), *(slice(a, b) for a, b in zip(start, stop)))
    dst = (slice(None), *(slice(o, o + b - a) for o, a, b in zip(offset, start, stop)))
    target[dst] = source[src]
