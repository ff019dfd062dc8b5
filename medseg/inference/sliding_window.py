"""Sliding-window inference: overlapping patches weighted by a Gaussian importance map, run in batches.

Two ways to aggregate the same windows in the same order (so they agree to the last bit):

* ``sliding_window`` holds one accumulator for the whole ``(K, *S)`` output (simple; memory ``(K + 1) * S``);
* ``sliding_window_slabs`` streams: windows are visited in order of their start on the first axis, and the
  accumulator only covers the band of that axis that open windows still touch (one patch deep). Every
  slab that no later window can reach is normalised and yielded, then dropped, so memory does not grow with
  the length of the first axis; a ``tile`` of the plane (a range of window starts per axis after the first)
  bounds it across the plane too (``medseg.inference.tiles``).

Window placement follows nnU-Net: per axis the fewest windows whose stride is at most ``step * patch``, spread
evenly from 0 to ``size - patch``. Images smaller than the patch are zero-padded (centred) and the padding is
cropped off the result. ``context`` (2.5D) reads each window with that many more slices before and after it on
the first axis (the edge slice repeated past the image's ends); ``predict`` still answers for the window alone.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

PredictFn = Callable[[torch.Tensor], torch.Tensor]  # (B, C, *patch) -> (B, K, *patch), a new tensor (scaled in place)
Window = tuple[int, ...]  # start corner in voxels

MIN_WEIGHT = 1e-4  # floor of the importance map, relative to its centre (nnU-Net: its smallest non-zero value)


def window_starts(size: int, patch: int, step: float = 0.5) -> list[int]:
    """Start indices of the windows along one axis of length ``size`` (``size >= patch``)."""
    if patch >= size:
        return [0]
    target = max(1.0, patch * step)
    count = math.ceil((size - patch) / target) + 1
    stride = (size - patch) / (count - 1)
    return sorted({int(round(stride * i)) for i in range(count)})


def window_grid(shape: Sequence[int], patch_size: Sequence[int], step: float = 0.5) -> list[Window]:
    """All window corners for an image of spatial ``shape``, ordered by the first axis first (z-major)."""
    return list(itertools.product(*[window_starts(s, p, step) for s, p in zip(shape, patch_size)]))


def gaussian_importance_map(patch_size: Sequence[int], sigma_scale: float = 1 / 8,
                            min_weight: float = MIN_WEIGHT) -> torch.Tensor:
    """``(*patch)`` float32 Gaussian centred on the patch, ``sigma = sigma_scale * patch`` per axis.

    Normalised to 1 at the centre and clamped to ``min_weight`` so that voxels covered only by window corners
    keep a weight sum well away from zero (also in float16 accumulators).
    """
    axes = []
    for p in patch_size:
        x = torch.arange(p, dtype=torch.float64) - (p - 1) / 2
        sigma = max(p * sigma_scale, 1e-6)
        axes.append(torch.exp(-0.5 * (x / sigma) ** 2))
    weights = axes[0]
    for axis in axes[1:]:
        weights = weights[..., None] * axis
    weights = weights / weights.max()
    return weights.clamp_min(min_weight).float()


def pad_to_patch(image: torch.Tensor, patch_size: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
    """Zero-pad ``(C, *S)`` so every axis is at least the patch; returns the padded tensor and the padding
    before each spatial axis (so ``padded[:, b0:b0 + S0, ...]`` is the original)."""
    before = [max(0, p - s) // 2 for s, p in zip(image.shape[1:], patch_size)]
    if not any(p > s for s, p in zip(image.shape[1:], patch_size)):
        return image, before
    pads = []
    for s, p, b in reversed(list(zip(image.shape[1:], patch_size, before))):
        total = max(0, p - s)
        pads += [b, total - b]
    return F.pad(image, pads), before


def _weighted_batches(predict: PredictFn, image: torch.Tensor, windows: list[Window], patch_size: Sequence[int],
                      weights: torch.Tensor, batch_size: int, device: str | torch.device, context: int = 0
                      ) -> Iterator[tuple[list[Window], torch.Tensor]]:
    """Yield each batch of windows with its predictions times the importance map, ``(B, K, *patch)`` float32; the
    predictions are scaled in place (no copy of them per batch), so ``predict`` returns a new tensor, or a view of
    the windows it was given."""
    for first in range(0, len(windows), batch_size):
        batch = windows[first:first + batch_size]
        patches = torch.stack([_read_window(image, w, patch_size, context) for w in batch]).to(device)
        with torch.inference_mode():
            out = predict(patches).to("cpu", torch.float32)
            out.mul_(weights)
        yield batch, out


def _add_window(accumulator: torch.Tensor, total: torch.Tensor, region: tuple[slice, ...], prediction: torch.Tensor,
                weights: torch.Tensor) -> None:
    """Add a weighted ``prediction`` ``(K, *patch)`` to ``accumulator[:, region]`` and the importance map
    ``weights`` to ``total[region]``."""
    accumulator[(slice(None), *region)] += prediction if accumulator.dtype == torch.float32 else \
        prediction.to(accumulator.dtype)
    total[region] += weights


def _read_window(image: torch.Tensor, window: Window, patch_size: Sequence[int], context: int) -> torch.Tensor:
    """``image[:, window]`` ``(C, *patch)``; with ``context`` h, ``(C, patch0 + 2h, *patch[1:])``: h more slices
    each side on the first axis, indices clamped to the image (edge slices repeated)."""
    region = _slices(window, patch_size)
    if not context:
        return image[(slice(None), *region)]
    rows = torch.arange(window[0] - context, window[0] + patch_size[0] + context).clamp_(0, image.shape[1] - 1)
    return image[(slice(None), slice(None), *region[1:])].index_select(1, rows)


def _slices(window: Window, patch_size: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(w, w + p) for w, p in zip(window, patch_size))


def sliding_window(predict: PredictFn, image: torch.Tensor, patch_size: Sequence[int], *, step: float = 0.5,
                   batch_size: int = 1, sigma_scale: float = 1 / 8,
                   accumulate_dtype: torch.dtype = torch.float32,
                   device: str | torch.device = "cpu", context: int = 0) -> torch.Tensor:
    """Aggregate ``predict`` over overlapping windows of ``image`` ``(C, *S)``; returns ``(K, *S)`` float32.

    ``predict`` maps ``(B, C, *patch)`` on ``device`` to ``(B, K, *patch)`` (logits or probabilities: whatever
    it returns is averaged with the Gaussian weights); with ``context`` h its windows are
    ``(B, C, patch0 + 2h, *patch[1:])``. Memory: one ``(K, *S)`` accumulator in ``accumulate_dtype`` plus one
    float32 ``(*S)`` weight sum.
    """
    patch_size = [int(p) for p in patch_size]
    padded, before = pad_to_patch(image, patch_size)
    weights = gaussian_importance_map(patch_size, sigma_scale)
    windows = window_grid(padded.shape[1:], patch_size, step)
    total = torch.zeros(padded.shape[1:], dtype=torch.float32)
    accumulator: torch.Tensor | None = None
    for batch, predictions in _weighted_batches(predict, padded, windows, patch_size, weights, batch_size, device,
                                                     context):
        if accumulator is None:
            accumulator = torch.zeros((predictions.shape[1], *padded.shape[1:]), dtype=accumulate_dtype)
        for window, prediction in zip(batch, predictions):
            _add_window(accumulator, total, _slices(window, patch_size), prediction, weights)
    assert accumulator is not None
    result = accumulator.float() if accumulator.dtype != torch.float32 else accumulator
    result /= total
    crop = tuple(slice(b, b + s) for b, s in zip(before, image.shape[1:]))
    return result[(slice(None), *crop)]


def sliding_window_slabs(predict: PredictFn, image: torch.Tensor, patch_size: Sequence[int], *, step: float = 0.5,
                         batch_size: int = 1, sigma_scale: float = 1 / 8,
                         accumulate_dtype: torch.dtype = torch.float32,
                         device: str | torch.device = "cpu", context: int = 0,
                         tile: Sequence[tuple[int, int]] | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """Streamed ``sliding_window``: yields ``(z0, slab)`` with ``slab`` ``(K, dz, *S[1:])`` float32 equal to
    ``sliding_window(...)[:, z0:z0 + dz]``, in order along the first axis and covering it exactly once.

    ``tile``: per axis after the first, the range ``[i0, i1)`` of that axis's window starts (``padded_starts``) to
    run; the slabs then cover only the part of the plane those windows reach (``tile_rows`` per axis) and average
    those windows alone, which equals ``sliding_window`` wherever no other window reaches.

    Memory: one band of the accumulator, one patch deep over the tile's plane, allocated once: the rows before a
    window's start are finished as soon as it comes (windows go in order of their first-axis start), yielded in
    slabs of at most ``SLAB_ROWS`` rows and moved out of the band in place.
    """
    patch_size = [int(p) for p in patch_size]
    padded, before = pad_to_patch(image, patch_size)
    weights = gaussian_importance_map(patch_size, sigma_scale)
    starts = [window_starts(s, p, step) for s, p in zip(padded.shape[1:], patch_size)]
    if tile is not None:
        starts = starts[:1] + [axis[a:b] for axis, (a, b) in zip(starts[1:], tile)]
    windows = list(itertools.product(*starts))
    corner = [axis[0] for axis in starts[1:]]  # the band's origin in the plane (padded coordinates)
    extent = [axis[-1] + p - axis[0] for axis, p in zip(starts[1:], patch_size[1:])]
    # the band's part of the unpadded image, in band coordinates
    crop = tuple(slice(max(b, c) - c, min(b + s, c + e) - c)
                 for b, s, c, e in zip(before[1:], image.shape[2:], corner, extent))
    rows = (before[0], before[0] + image.shape[1])
    depth = patch_size[0]
    total = torch.zeros((depth, *extent), dtype=torch.float32)
    accumulator: torch.Tensor | None = None
    low = 0  # first band row (padded coordinates) not yet yielded: row 0 of the band
    for batch, predictions in _weighted_batches(predict, padded, windows, patch_size, weights, batch_size, device,
                                                     context):
        if accumulator is None:
            accumulator = torch.zeros((predictions.shape[1], depth, *extent), dtype=accumulate_dtype)
        for window, prediction in zip(batch, predictions):
            if window[0] > low:  # no later window reaches the rows before this one's start
                yield from _finished_slabs(accumulator, total, low, window[0], rows, crop)
                _shift_band(accumulator, window[0] - low)
                _shift_band(total[None], window[0] - low)
                low = window[0]
            region = (slice(window[0] - low, window[0] - low + depth),
                      *(slice(w - c, w - c + p) for w, c, p in zip(window[1:], corner, patch_size[1:])))
            _add_window(accumulator, total, region, prediction, weights)
    assert accumulator is not None
    yield from _finished_slabs(accumulator, total, low, padded.shape[1], rows, crop)


SLAB_ROWS = 4  # rows per yielded slab: the copies made after the band (normalised slab, resampled) stay small


def _finished_slabs(accumulator: torch.Tensor, total: torch.Tensor, low: int, stop: int, rows: tuple[int, int],
                    crop: tuple[slice, ...]) -> Iterator[tuple[int, torch.Tensor]]:
    """The finished band rows ``[low, stop)`` (padded coordinates; band row 0 is ``low``) that lie in the image's
    ``rows``, normalised by the weight sum, as ``(z0, (K, dz, *plane))`` slabs (new tensors) of at most
    ``SLAB_ROWS`` rows; ``z0`` in unpadded coordinates."""
    first, last = max(low, rows[0]), min(stop, rows[1])
    for a in range(first, last, SLAB_ROWS):
        band_rows = slice(a - low, min(a + SLAB_ROWS, last) - low)
        slab = accumulator[(slice(None), band_rows, *crop)]
        slab = slab.float() if slab.dtype != torch.float32 else slab
        yield a - rows[0], slab / total[(band_rows, *crop)]


def padded_starts(size: int, patch: int, step: float = 0.5) -> tuple[list[int], int]:
    """The window starts along an axis of length ``size`` (on the axis zero-padded to the patch, as
    ``pad_to_patch`` pads it) and the padding before it."""
    padded = max(int(size), int(patch))
    return window_starts(padded, patch, step), (padded - size) // 2


def tile_rows(size: int, patch: int, step: float, windows: tuple[int, int]) -> tuple[int, int]:
    """The rows ``[a, b)`` of an axis of length ``size`` that the windows ``[i0, i1)`` of its starts reach (what
    ``sliding_window_slabs`` yields of a tile on that axis)."""
    starts, before = padded_starts(size, patch, step)
    return max(starts[windows[0]] - before, 0), min(starts[windows[1] - 1] + patch - before, size)


def _shift_band(band: torch.Tensor, rows: int) -> None:
    """Move ``band`` ``(K, depth, ...)`` up by ``rows`` on its second axis in place and zero the freed rows; the
    move goes in chunks of at most ``rows`` rows, so that source and destination never overlap."""
    depth = band.shape[1]
    for start in range(0, depth - rows, rows):
        stop = min(start + rows, depth - rows)
        band[:, start:stop] = band[:, start + rows:stop + rows]
    band[:, max(depth - rows, 0):].zero_()
