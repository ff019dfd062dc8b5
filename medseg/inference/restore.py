"""Undo preprocessing slab by slab: resample class probabilities from the network's grid back to the cropped
input grid, then argmax, map channels to label values and paste into the full-size label map.

Resampling is separable: each slab is first resampled in-plane (bilinear, pixel-centre aligned, as
``F.interpolate(align_corners=False)``), then along the first axis by linear interpolation (or nearest, for
anisotropic data resampled with ``separate_z``), row by row as soon as both source rows have arrived. So the
streamed result equals resampling the whole volume at once.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def _source_rows(n_in: int, n_out: int, nearest: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output row: the two source rows and the weight of the second (pixel-centre alignment)."""
    out = np.arange(n_out, dtype=np.float64)
    if nearest:
        rows = np.minimum(np.floor((out + 0.5) * n_in / n_out), n_in - 1).astype(np.int64)
        return rows, rows, np.zeros(n_out)
    source = np.clip((out + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lower = np.floor(source).astype(np.int64)
    upper = np.minimum(lower + 1, n_in - 1)
    return lower, upper, source - lower


class SlabResampler:
    """Resample a ``(K, Z_in, *P_in)`` volume that arrives in slabs along Z to ``(K, Z_out, *P_out)``.

    ``push(z0, slab)`` takes the next slab ``(K, dz, *P_in)`` (slabs in order, no gaps) and returns the output
    slabs it completes, each ``(o0, (K, do, *P_out))``.
    """

    def __init__(self, shape_in: Sequence[int], shape_out: Sequence[int], *, nearest_first_axis: bool = False):
        self.plane_in, self.plane_out = tuple(shape_in[1:]), tuple(shape_out[1:])
        self.lower, self.upper, self.weight = _source_rows(int(shape_in[0]), int(shape_out[0]), nearest_first_axis)
        self.identity_rows = shape_in[0] == shape_out[0]
        self.buffer: torch.Tensor | None = None  # in-plane resampled rows [self.start, self.start + len)
        self.start = 0
        self.next_out = 0

    def _in_plane(self, slab: torch.Tensor) -> torch.Tensor:
        if self.plane_in == self.plane_out:
            return slab
        mode = {1: "linear", 2: "bilinear"}[len(self.plane_in)]
        rows = slab.transpose(0, 1)  # (dz, K, *P): rows are the batch
        return F.interpolate(rows, size=self.plane_out, mode=mode, align_corners=False).transpose(0, 1)

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
        lower = torch.from_numpy(self.lower[rows] - self.start)
        upper = torch.from_numpy(self.upper[rows] - self.start)
        weight = torch.from_numpy(self.weight[rows]).float().view(1, -1, *[1] * len(self.plane_out))
        out = self.buffer[:, lower] * (1 - weight) + self.buffer[:, upper] * weight
        first = self.next_out
        self.next_out = stop
        keep_from = int(self.lower[stop]) if stop < len(self.lower) else end
        self.buffer = self.buffer[:, keep_from - self.start:]
        self.start = keep_from
        return [(first, out)]


def label_lookup(label_values: Sequence[int]) -> tuple[torch.Tensor, np.dtype]:
    """Channel index -> label value table and the smallest integer dtype that holds the labels."""
    top = max(label_values)
    dtype = np.uint8 if top < 2 ** 8 else np.uint16 if top < 2 ** 16 else np.int32
    return torch.as_tensor(list(label_values), dtype=torch.int64), np.dtype(dtype)


def paste_labels(probabilities: Iterator[tuple[int, torch.Tensor]], lookup: torch.Tensor, out: np.ndarray,
                 bbox: Sequence[Sequence[int]]) -> None:
    """Argmax each ``(o0, (K, do, *P))`` slab, map channel -> label value and write it into ``out`` ``(*full)``
    inside the crop ``bbox`` (``[[start, stop], ...]`` per axis)."""
    inner = tuple(slice(a, b) for a, b in bbox[1:])
    for o0, slab in probabilities:
        labels = lookup[slab.argmax(0)].numpy().astype(out.dtype, copy=False)
        z = bbox[0][0] + o0
        out[(slice(z, z + labels.shape[0]), *inner)] = labels


def paste_best(probabilities: Iterator[tuple[int, torch.Tensor]], lookup: torch.Tensor, best: np.ndarray,
               out: np.ndarray, bbox: Sequence[Sequence[int]]) -> None:
    """One pass over a group of classes: where a ``(k, do, *P)`` slab's top probability beats ``best``
    ``(*crop)`` float32 (strictly: an earlier group keeps a tie, as ``argmax`` does), write it there and the
    class's label value (``lookup``: the group's channel -> label value) into ``out`` ``(*full)`` inside the crop
    ``bbox``. Passes over the groups in channel order give ``paste_labels``' labels exactly."""
    inner = tuple(slice(a, b) for a, b in bbox[1:])
    for o0, slab in probabilities:
        top, channel = slab.max(0)
        top = top.numpy()
        rows = slice(o0, o0 + top.shape[0])
        wins = top > best[rows]
        best[rows][wins] = top[wins]
        z = bbox[0][0] + o0
        target = out[(slice(z, z + top.shape[0]), *inner)]
        target[wins] = lookup[channel].numpy().astype(out.dtype, copy=False)[wins]


def bytes_of(shape: Sequence[int], dtype: torch.dtype = torch.float32) -> int:
    """Bytes of a tensor of ``shape`` and ``dtype``."""
    return int(math.prod(shape)) * torch.empty((), dtype=dtype).element_size()
