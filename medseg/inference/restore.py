"""Undo preprocessing slab by slab: resample class probabilities from the network's grid back to the cropped
input grid, then argmax, map channels to label values and paste into the full-size label map.

Resampling is separable, one axis at a time by linear interpolation between the two nearest source rows
(pixel-centre aligned, as ``F.interpolate(align_corners=False)``): each slab in-plane first, then along the first
axis (or nearest there, for anisotropic data resampled with ``separate_z``) row by row as soon as both source rows
have arrived. Every output voxel reads the same two source rows per axis however the volume arrives, so the streamed
result equals resampling the whole volume at once, also for a tile of the plane (``SlabResampler(output=...)``).
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch

Start = tuple[int, ...]  # a slab's first voxel, per spatial axis


def source_rows(n_in: int, n_out: int, nearest: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output row of an axis resampled from ``n_in`` to ``n_out`` rows: the two source rows and the
    weight of the second (pixel-centre alignment); a row that takes one source row alone names it twice."""
    out = np.arange(n_out, dtype=np.float64)
    if nearest:
        rows = np.minimum(np.floor((out + 0.5) * n_in / n_out), n_in - 1).astype(np.int64)
        return rows, rows, np.zeros(n_out)
    source = np.clip((out + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lower = np.floor(source).astype(np.int64)
    weight = source - lower
    return lower, np.where(weight > 0, np.minimum(lower + 1, n_in - 1), lower), weight


def _lerp(x: torch.Tensor, dim: int, lower: np.ndarray, upper: np.ndarray, weight: np.ndarray) -> torch.Tensor:
    """``x`` resampled along ``dim``: row ``i`` of the result is ``x[lower[i]] * (1 - w) + x[upper[i]] * w``."""
    w = torch.from_numpy(weight).float().view(-1, *[1] * (x.ndim - dim - 1))
    below = x.index_select(dim, torch.from_numpy(lower))
    return below * (1 - w) + x.index_select(dim, torch.from_numpy(upper)) * w


class SlabResampler:
    """Resample a ``(K, Z_in, *P_in)`` volume that arrives in slabs along Z to ``(K, Z_out, *P_out)``, or to the
    part ``output`` (``[a, b)`` per in-plane axis) of its plane, from slabs whose plane starts at ``source_start``.

    ``push(z0, slab)`` takes the next slab ``(K, dz, *plane)`` (slabs in order, no gaps; the plane must hold every
    source row that ``output`` reads) and returns the output slabs it completes, each ``(o0, (K, do, *out))``.
    """

    def __init__(self, shape_in: Sequence[int], shape_out: Sequence[int], *, nearest_first_axis: bool = False,
                 output: Sequence[tuple[int, int]] | None = None, source_start: Sequence[int] | None = None):
        output = output or [(0, int(n)) for n in shape_out[1:]]
        source_start = source_start or [0] * len(output)
        self.plane = []  # per in-plane axis: None (same size: a slice) or its (lower, upper, weight) rows
        for n_in, n_out, (a, b), start in zip(shape_in[1:], shape_out[1:], output, source_start):
            if n_in == n_out:
                self.plane.append(slice(a - start, b - start))
            else:
                lower, upper, weight = source_rows(int(n_in), int(n_out))
                self.plane.append((lower[a:b] - start, upper[a:b] - start, weight[a:b]))
        self.lower, self.upper, self.weight = source_rows(int(shape_in[0]), int(shape_out[0]), nearest_first_axis)
        self.identity_rows = shape_in[0] == shape_out[0]
        self.buffer: torch.Tensor | None = None  # in-plane resampled rows [self.start, self.start + len)
        self.start = 0
        self.next_out = 0

    def _in_plane(self, slab: torch.Tensor) -> torch.Tensor:
        for dim, axis in enumerate(self.plane, start=2):
            if isinstance(axis, slice):
                slab = slab[(slice(None),) * dim + (axis,)]
            else:
                slab = _lerp(slab, dim, *axis)
        return slab

    def push(self, z0: int, slab: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
        slab = self._in_plane(slab)
        if self.identity_rows:
            self.next_out = z0 + slab.shape[1]
            return [(z0, slab)]
        if self.buffer is None:
            self.buffer, self.start = slab, z0
        else:
            self.buffer = torch.cat([self.buffer, slab], 1)
        end = self.start + self.buffer.shape[1]
        stop = self.next_out
        while stop < len(self.upper) and self.upper[stop] < end:
            stop += 1
        if stop == self.next_out:
            return []
        rows = np.arange(self.next_out, stop)
        out = _lerp(self.buffer, 1, self.lower[rows] - self.start, self.upper[rows] - self.start, self.weight[rows])
        first = self.next_out
        self.next_out = stop
        keep_from = int(self.lower[stop]) if stop < len(self.lower) else end
        self.buffer = self.buffer[:, keep_from - self.start:]
        self.start = keep_from
        return [(first, out)]


def full_region(bbox: Sequence[Sequence[int]], start: Start, shape: Sequence[int]) -> tuple[slice, ...]:
    """The slices of the full image that a block of spatial ``shape`` at ``start`` in the crop ``bbox``
    (``[[start, stop], ...]`` per axis) covers."""
    return tuple(slice(box[0] + s, box[0] + s + n) for box, s, n in zip(bbox, start, shape))


def label_lookup(label_values: Sequence[int]) -> tuple[torch.Tensor, np.dtype]:
    """Channel index -> label value table and the smallest integer dtype that holds the labels."""
    top = max(label_values)
    dtype = np.uint8 if top < 2 ** 8 else np.uint16 if top < 2 ** 16 else np.int32
    return torch.as_tensor(list(label_values), dtype=torch.int64), np.dtype(dtype)


def paste_labels(probabilities: Iterator[tuple[Start, torch.Tensor]], lookup: torch.Tensor, out: np.ndarray,
                 bbox: Sequence[Sequence[int]]) -> None:
    """Argmax each ``(start, (K, *block))`` slab, map channel -> label value and write it into ``out`` ``(*full)``
    at ``start`` inside the crop ``bbox`` (``[[start, stop], ...]`` per axis)."""
    for start, slab in probabilities:
        labels = lookup[slab.argmax(0)].numpy().astype(out.dtype, copy=False)
        out[full_region(bbox, start, labels.shape)] = labels


def bytes_of(shape: Sequence[int], dtype: torch.dtype = torch.float32) -> int:
    """Bytes of a tensor of ``shape`` and ``dtype``."""
    return int(math.prod(shape)) * torch.empty((), dtype=dtype).element_size()
