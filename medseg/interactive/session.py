"""An interactive session: one image, its slices' cached embeddings, the prompts given on each slice and the mask
they produced. The web page talks to this; this talks only to a ``Segmenter``.

2D images ``(C, Y, X)`` have one slice; 3D volumes ``(C, Z, Y, X)`` have ``Z`` axial slices ``(C, Y, X)``
(index along the first spatial axis). Prompts are ``(row, col)`` pixels of a slice, as in ``prompts.py``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import MedsegError
from medseg.interactive.prompts import Prompt, PromptSet
from medseg.interactive.segmenter import Segmenter
from medseg.io import Image, write_image

WINDOW_PERCENTILES = (0.5, 99.5)
_WINDOW_SAMPLES = 1_000_000  # windowing statistics from at most this many voxels per channel


@dataclass
class SliceState:
    """The prompts on one slice and the probability ``(H, W)`` after each of them.

    ``base`` is a probability that came without prompts (propagated from a neighbouring slice); the prompts given
    afterwards refine it.
    """

    prompts: PromptSet = field(default_factory=PromptSet)
    history: list[np.ndarray] = field(default_factory=list)
    base: np.ndarray | None = None

    @property
    def probability(self) -> np.ndarray | None:
        return self.history[-1] if self.history else self.base


class InteractiveSession:
    """Stateful promptable segmentation of one image with a stateless ``Segmenter`` (SAM's predictor pattern).

    Each slice is embedded once, when it is first prompted (an LRU cache keeps the last ``cache_size``
    embeddings); each interaction runs only ``segmenter.predict`` with the slice's prompts and last probability.
    """

    def __init__(self, segmenter: Segmenter, *, display_channel: int = 0, cache_size: int = 8):
        if cache_size < 1:
            raise MedsegError(f"cache_size {cache_size} must be at least 1")
        self.segmenter = segmenter
        self.display_channel = display_channel
        self.cache_size = cache_size
        self.last_latency_ms: float | None = None
        self._image: Image | None = None
        self._windows: np.ndarray | None = None
        self._embeddings: OrderedDict[int, Any] = OrderedDict()
        self._slices: dict[int, SliceState] = {}

    # --- the image -----------------------------------------------------------------------------------------

    def set_image(self, image: Image) -> None:
        """Start over on ``image`` (2D ``(C, Y, X)`` or 3D ``(C, Z, Y, X)``): no prompts, no embeddings."""
        if image.ndim not in (2, 3):
            raise MedsegError(f"interactive segmentation needs a 2D or 3D image, this one is {image.ndim}D")
        if not 0 <= self.display_channel < image.num_channels and not self._is_rgb(image):
            raise MedsegError(f"display channel {self.display_channel} does not exist, the image has "
                              f"{image.num_channels} channel(s)", fix=f"choose 0..{image.num_channels - 1}")
        self._image = image
        self._windows = _percentile_windows(image.array)
        self._embeddings.clear()
        self._slices.clear()

    @property
    def image(self) -> Image:
        if self._image is None:
            raise MedsegError("no image is open", fix="call set_image first (or open an image on the page)")
        return self._image

    @property
    def num_slices(self) -> int:
        """1 for a 2D image, ``Z`` for a 3D volume."""
        return 1 if self.image.ndim == 2 else self.image.spatial_shape[0]

    @property
    def slice_shape(self) -> tuple[int, int]:
        """``(H, W)`` of every slice."""
        return tuple(self.image.spatial_shape[-2:])

    def slice_array(self, index: int) -> np.ndarray:
        """The image data of one slice, ``(C, H, W)`` float32, as the segmenter receives it."""
        index = self._check_index(index)
        array = self.image.array if self.image.ndim == 2 else self.image.array[:, index]
        return np.asarray(array, dtype=np.float32)

    def display_slice(self, index: int) -> np.ndarray:
        """``(H, W, 3)`` uint8 for the screen: 8-bit RGB(A) photos as they are; otherwise each channel windowed
        to its 0.5–99.5 percentiles over the whole image, RGB shown as RGB and anything else as the grey
        ``display_channel``."""
        index = self._check_index(index)
        image = self.image
        array = image.array if image.ndim == 2 else image.array[:, index]
        if self._is_rgb(image):
            rgb = array[:3]
            if rgb.dtype != np.uint8:
                rgb = _window(rgb, self._windows[:3])
            return np.ascontiguousarray(np.moveaxis(rgb, 0, -1))
        channel = self.display_channel
        grey = _window(array[channel:channel + 1], self._windows[channel:channel + 1])[0]
        return np.repeat(grey[..., None], 3, axis=-1)

    # --- interactions --------------------------------------------------------------------------------------

    def prompts(self, slice_index: int = 0) -> PromptSet:
        """The prompts given on a slice so far (a copy)."""
        state = self._slices.get(self._check_index(slice_index))
        return PromptSet(list(state.prompts.prompts)) if state else PromptSet()

    def probability(self, slice_index: int = 0) -> np.ndarray | None:
        """The current foreground probability ``(H, W)`` float32 of a slice, None before any prompt."""
        state = self._slices.get(self._check_index(slice_index))
        return None if state is None else state.probability

    def slice_mask(self, slice_index: int = 0) -> np.ndarray:
        """The current mask ``(H, W)`` bool of a slice (``probability >= 0.5``; empty before any prompt)."""
        probability = self.probability(slice_index)
        return np.zeros(self.slice_shape, bool) if probability is None else probability >= 0.5

    def add(self, prompt: Prompt, slice_index: int = 0) -> np.ndarray:
        """Add a click, box or scribble on a slice; returns the new mask ``(H, W)`` bool."""
        index = self._check_index(slice_index)
        _check_prompt_inside(prompt, self.slice_shape)
        state = self._slices.setdefault(index, SliceState())
        previous = state.probability
        state.prompts.add(prompt)
        try:
            probability = self._predict(index, state.prompts, previous)
        except BaseException:
            state.prompts.undo()
            raise
        state.history.append(probability)
        return probability >= 0.5

    def undo(self, slice_index: int = 0) -> np.ndarray:
        """Take back the last prompt on a slice; returns the mask ``(H, W)`` bool from the remaining prompts (the
        probability they had produced, which was also the ``previous`` of the undone prompt), or an empty one.
        A slice with only a propagated mask is cleared."""
        index = self._check_index(slice_index)
        state = self._slices.get(index)
        if state is not None and state.prompts.undo() is not None:
            state.history.pop()
        elif state is not None:
            state.base = None
        if state is not None and state.probability is None:
            del self._slices[index]
        return self.slice_mask(index)

    def propagate(self, slice_index: int, max_distance: int | None = None) -> list[int]:
        """Carry a slice's current mask to its neighbours in both directions (``propagate.propagate_mask``, with
        this session's cached embeddings); returns the sorted indices of the slices it filled.

        Each filled slice starts over with the propagated probability as its ``base``: prompts that were on it are
        dropped, prompts given afterwards refine it, undoing them all returns to it, one more undo (or a reset)
        clears it. The start slice keeps its prompts. Slices not reached keep what they had. Propagation stops
        where the object ends, at the volume's ends, or ``max_distance`` slices away. Nothing changes when the
        segmenter fails part-way (the results are stored only at the end).
        """
        from medseg.interactive.propagate import propagate_mask

        index = self._check_index(slice_index)
        if self.image.ndim != 3:
            raise MedsegError("only a 3D volume can be propagated, this image is 2D")
        if max_distance is not None and max_distance < 1:
            raise MedsegError(f"max_distance {max_distance} must be at least 1", fix="leave it out for no limit")
        probability = self.probability(index)
        if probability is None or not (probability >= 0.5).any():
            raise MedsegError(f"slice {index} has no mask to propagate", fix="prompt the object on that slice first")
        reached = propagate_mask(self.segmenter, self.embedding, self.num_slices, index, probability,
                                 max_distance=max_distance)
        checked = {target: self._checked(result) for target, result in reached.items()}
        self._slices.update({target: SliceState(base=result) for target, result in checked.items()})
        return sorted(checked)

    def reset(self, slice_index: int = 0) -> np.ndarray:
        """Forget every prompt and the mask of a slice; returns the empty mask ``(H, W)``."""
        self._slices.pop(self._check_index(slice_index), None)
        return self.slice_mask(slice_index)

    # --- the result ----------------------------------------------------------------------------------------

    def mask(self) -> np.ndarray:
        """The label map of the whole image, ``(*spatial)`` uint8 (1 = object), on the image's grid."""
        out = np.zeros(self.image.spatial_shape, np.uint8)
        for index, state in self._slices.items():
            if state.probability is not None:
                target = out if self.image.ndim == 2 else out[index]
                target[...] = state.probability >= 0.5
        return out

    def mask_image(self) -> Image:
        """``mask()`` as an ``Image`` ``(1, *spatial)`` with the image's spacing, origin and direction."""
        return self.image.with_array(self.mask()[None])

    def save(self, path: str | Path) -> Path:
        """Write the mask in the image's geometry; the format follows the suffix (``.png``, ``.nii.gz``, ...)."""
        return write_image(self.mask_image(), path)

    # --- internals -----------------------------------------------------------------------------------------

    def embedding(self, slice_index: int) -> Any:
        """The segmenter's embedding of a slice, computed on first use and kept in the LRU cache."""
        index = self._check_index(slice_index)
        if index in self._embeddings:
            self._embeddings.move_to_end(index)
            return self._embeddings[index]
        embedding = self.segmenter.embed(self.slice_array(index))
        self._embeddings[index] = embedding
        while len(self._embeddings) > self.cache_size:
            self._embeddings.popitem(last=False)
        return embedding

    def _predict(self, index: int, prompts: PromptSet, previous: np.ndarray | None) -> np.ndarray:
        embedding = self.embedding(index)
        start = time.perf_counter()
        probability = self.segmenter.predict(embedding, prompts, previous)
        self.last_latency_ms = (time.perf_counter() - start) * 1000
        return self._checked(probability)

    def _checked(self, probability: np.ndarray) -> np.ndarray:
        """The segmenter's answer as ``(H, W)`` float32; MedsegError when it is not on the slice's grid."""
        probability = np.asarray(probability, dtype=np.float32)
        if probability.shape != self.slice_shape:
            raise MedsegError(f"segmenter {getattr(self.segmenter, 'name', '?')} returned shape "
                              f"{probability.shape} for a slice of {self.slice_shape}",
                              fix="the Segmenter contract returns (H, W) on the image's grid")
        return probability

    def _check_index(self, index: int) -> int:
        if not isinstance(index, (int, np.integer)) or not 0 <= index < self.num_slices:
            raise MedsegError(f"slice {index} does not exist, the image has {self.num_slices} slice(s)",
                              fix=f"use 0..{self.num_slices - 1}")
        return int(index)

    @staticmethod
    def _is_rgb(image: Image) -> bool:
        return image.ndim == 2 and image.num_channels in (3, 4)


def _check_prompt_inside(prompt: Prompt, shape: tuple[int, int]) -> None:
    points = [getattr(prompt, "point", None), getattr(prompt, "start", None), getattr(prompt, "stop", None),
              *getattr(prompt, "points", ())]
    for point in (p for p in points if p is not None):
        if not all(-0.5 <= float(v) <= s - 0.5 for v, s in zip(point, shape)):
            raise MedsegError(f"prompt point {tuple(point)} is outside the slice of {shape} pixels",
                              fix="give (row, col) inside the image")


def _percentile_windows(array: np.ndarray) -> np.ndarray:
    """``(C, 2)`` low/high intensity per channel of ``array (C, *spatial)`` (from a regular subsample)."""
    windows = np.zeros((array.shape[0], 2), np.float64)
    for c in range(array.shape[0]):
        values = array[c].reshape(-1)
        values = values[:: max(1, values.size // _WINDOW_SAMPLES)].astype(np.float64)
        values = values[np.isfinite(values)]
        if values.size:
            windows[c] = np.percentile(values, WINDOW_PERCENTILES)
    return windows


def _window(array: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` -> uint8, channel ``c`` mapped from ``windows[c]`` = (low, high) to 0..255."""
    low, high = windows[:, 0, None, None], windows[:, 1, None, None]
    scaled = (np.nan_to_num(array.astype(np.float32)) - low) / np.maximum(high - low, 1e-8)
    return (np.clip(scaled, 0, 1) * 255).round().astype(np.uint8)

