"""Sliding-window inference: overlapping patches weighted by a Gaussian importance map, run in batches.

Two ways to aggregate the same windows in the same order (so they agree to the last bit):

* ``sliding_window`` holds one accumulator for the whole ``(K, *S)`` output (simple; memory ``(K + 1) * S``);
* ``sliding_window_slabs`` streams: windows are visited in order of their start on the first axis, and the
  accumulator only covers the band of that axis that open windows still touch (about one patch deep). Every
  slab that no later window can reach is normalised and yielded, then dropped, so memory does not grow with
  the length of the first axis.

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

PredictFn = Callable[[torch.Tensor], torch.Tensor]  # (B, C, *patch) -> (B, K, *patch)
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
    """Yield each batch of windows with its predictions times the importance map, ``(B, K, *patch)`` float32."""
    for first in range(0, len(windows), batch_size):
        batch = windows[first:first + batch_size]
        patches = torch.stack([_read_window(image, w, patch_size, context) for w in batch]).to(device)
        with torch.inference_mode():
            out = predict(patches)
        yield batch, out.to("cpu", torch.float32) * weights


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
            region = _slices(window, patch_size)
            accumulator[(slice(None), *region)] += prediction.to(accumulate_dtype)
            total[region] += weights
    assert accumulator is not None
    result = accumulator.float() if accumulator.dtype != torch.float32 else accumulator
    result /= total
    crop = tuple(slice(b, b + s) for b, s in zip(before, image.shape[1:]))
    return result[(slice(None), *crop)]


def sliding_window_slabs(predict: PredictFn, image: torch.Tensor, patch_size: Sequence[int], *, step: float = 0.5,
                         batch_size: int = 1, sigma_scale: float = 1 / 8,
                         accumulate_dtype: torch.dtype = torch.float32,
                         device: str | torch.device = "cpu", context: int = 0) -> Iterator[tuple[int, torch.Tensor]]:
    """Streamed ``sliding_window``: yields ``(z0, slab)`` with ``slab`` ``(K, dz, *S[1:])`` float32 equal to
    ``sliding_window(...)[:, z0:z0 + dz]``, in order along the first axis and covering it exactly once.

    Memory: one band of the accumulator, allocated once: a patch plus the first-axis spread of one batch of
    windows deep; yielded rows are moved out of it in place (no growing or copying of the whole band).
    """
    patch_size = [int(p) for p in patch_size]
    padded, before = pad_to_patch(image, patch_size)
    weights = gaussian_importance_map(patch_size, sigma_scale)
    windows = window_grid(padded.shape[1:], patch_size, step)
    rest = padded.shape[2:]
    crop = tuple(slice(b, b + s) for b, s in zip(before[1:], image.shape[2:]))
    z_before, z_size = before[0], image.shape[1]
    depth = _band_depth(windows, patch_size, batch_size)
    low = 0  # first row (padded coordinates) not yet yielded: row 0 of the band
    accumulator: torch.Tensor | None = None
    total = torch.zeros((depth, *rest), dtype=torch.float32)
    done = 0
    for batch, predictions in _weighted_batches(predict, padded, windows, patch_size, weights, batch_size, device,
                                                     context):
        if accumulator is None:
            accumulator = torch.zeros((predictions.shape[1], depth, *rest), dtype=accumulate_dtype)
        for window, prediction in zip(batch, predictions):
            region = (slice(window[0] - low, window[0] - low + patch_size[0]), *_slices(window[1:], patch_size[1:]))
            accumulator[(slice(None), *region)] += prediction.to(accumulate_dtype)
            total[region] += weights
        done += len(batch)
        finished = windows[done][0] if done < len(windows) else padded.shape[1]
        if finished > low:
            rows = finished - low
            slab = accumulator[:, :rows].float() if accumulator.dtype != torch.float32 else accumulator[:, :rows]
            slab = slab / total[:rows]
            # keep only the rows of the unpadded image
            a, b = max(low, z_before), min(finished, z_before + z_size)
            if b > a:
                yield a - z_before, slab[(slice(None), slice(a - low, b - low), *crop)]
            del slab
            _shift_band(accumulator, rows)
            _shift_band(total[None], rows)
            low = finished


def _band_depth(windows: Sequence[Window], patch_size: Sequence[int], batch_size: int) -> int:
    """Rows of ``sliding_window_slabs``' band: batch b starts where every earlier row is finished (z-major
    order), and reaches its last start plus a patch."""
    firsts = range(0, len(windows), batch_size)
    return max(max(w[0] for w in windows[f:f + batch_size]) - windows[f][0] for f in firsts) + patch_size[0]


def band_shape(shape: Sequence[int], patch_size: Sequence[int], *, step: float = 0.5, batch_size: int = 1
               ) -> tuple[int, ...]:
    """The shape ``(depth, *padded[1:])`` of one channel of ``sliding_window_slabs``' band for an image of
    spatial ``shape``: what streaming costs per output channel."""
    patch_size = [int(p) for p in patch_size]
    padded = [max(int(s), p) for s, p in zip(shape, patch_size)]
    windows = window_grid(padded, patch_size, step)
    return (_band_depth(windows, patch_size, batch_size), *padded[1:])


def _shift_band(band: torch.Tensor, rows: int) -> None:
    """Move ``band`` ``(K, depth, ...)`` up by ``rows`` on its second axis in place and zero the freed rows; the
    move goes in chunks of at most ``rows`` rows, so that source and destination never overlap."""
    depth = band.shape[1]
    for start in range(0, depth - rows, rows):
        stop = min(start + rows, depth - rows)
        band[:, start:stop] = band[:, start + rows:stop + rows]
    band[:, max(depth - rows, 0):].zero_()
