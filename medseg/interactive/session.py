"""An interactive session: one image, its slices' cached embeddings, and for each structure (label) and slice the
prompts and manual edits given there and the mask they produced. The web page talks to this; this talks only to a
``Segmenter``.

2D images ``(C, Y, X)`` have one slice; 3D volumes ``(C, Z, Y, X)`` have ``Z`` axial slices ``(C, Y, X)``
(index along the first spatial axis). Prompts are ``(row, col)`` pixels of a slice, as in ``prompts.py``.
Structures are label values 1..255 (``labels``: value -> name); every method that prompts, edits or reads one
slice's mask takes ``label`` (default 1). ``mask()`` is the one multi-label map of all of them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medseg.errors import MedsegError
from medseg.interactive.prompts import Prompt, PromptSet, Scribble
from medseg.interactive.segmenter import Segmenter
from medseg.interactive.structures import MAX_LABEL
from medseg.io import Image, write_image

WINDOW_PERCENTILES = (0.5, 99.5)
CT_WINDOWS = (("CT soft tissue", 400, 40), ("CT lung", 1500, -600), ("CT bone", 1800, 400),
              ("CT brain", 80, 40))  # (name, width, level) in HU
_WINDOW_SAMPLES = 1_000_000  # windowing statistics from at most this many voxels per channel


_BASE = "propagated"  # what an undo of a propagated-only slice takes away (and a redo puts back)


@dataclass
class Step:
    """One change of a slice's mask: a prompt (the model's answer) or a manual edit (``prompt`` None), and the
    probability ``(H, W)`` float32 after it (a manual edit's is 0 or 1)."""

    probability: np.ndarray
    prompt: Prompt | None = None


@dataclass
class SliceState:
    """The steps (prompts and manual edits) on one slice of one structure, and the steps undone since the last new
    one (``undone``, for redo; newest last).

    ``base`` is a probability that came without prompts (propagated from a neighbouring slice); the steps taken
    afterwards refine it.
    """

    steps: list[Step] = field(default_factory=list)
    base: np.ndarray | None = None
    undone: list[Step | tuple[str, np.ndarray]] = field(default_factory=list)

    @property
    def probability(self) -> np.ndarray | None:
        return self.steps[-1].probability if self.steps else self.base

    @property
    def prompts(self) -> PromptSet:
        return PromptSet([s.prompt for s in self.steps if s.prompt is not None])

    def push(self, step: Step) -> None:
        self.steps.append(step)
        self.undone.clear()


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
        self._slices: dict[tuple[int, int], SliceState] = {}  # (label, slice) -> its state
        self.labels: dict[int, str] = {1: "object"}

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

    def set_labels(self, structures: dict[int, str]) -> None:
        """Start with these structures (value -> name) instead of the one default "object" (1)."""
        if not structures:
            raise MedsegError("no structures given", fix="name at least one, e.g. {1: 'liver'}")
        self.labels = {}
        for value, name in structures.items():
            self.set_label(value, name)

    def set_label(self, value: int, name: str) -> None:
        """Name the structure of label ``value`` (1..255); a new value adds a structure."""
        value = _check_label(value)
        name = str(name).strip()
        if not name or len(name) > 64:
            raise MedsegError("a label needs a name of 1 to 64 characters")
        self.labels[value] = name
        self.labels = dict(sorted(self.labels.items()))

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

    def plane(self, axis: int, index: int) -> np.ndarray:
        """The image along one axis for display with the viewer's own window: ``(C', H, W)`` float32, ``C'`` 3
        for an RGB photo and 1 otherwise (the display channel). ``axis`` 0 is the slices the model segments; a 3D
        volume also has ``axis`` 1 ``(Z, X)`` and 2 ``(Z, Y)`` planes."""
        image = self.image
        array = image.array[:3] if self._is_rgb(image) else image.array[self.display_channel:self.display_channel + 1]
        return np.nan_to_num(np.asarray(_plane(array, axis, index, image.ndim), dtype=np.float32))

    def label_plane(self, axis: int, index: int) -> np.ndarray:
        """The multi-label map (as ``mask()``) along one axis, ``(H, W)`` uint8; see ``plane``."""
        if axis == 0:
            return self._label_slice(self._check_index(index))
        return _plane(self.mask()[None], axis, index, self.image.ndim)[0]

    def display_presets(self) -> list[dict]:
        """Window presets for the viewer, ``[{"name", "low", "high"}]``, the first the default (as
        ``display_slice``): 0-255 for an 8-bit photo, then the display channel's 0.5-99.5 percentile range; then
        for a CT (values down to -500 HU or below) the soft tissue, lung, bone and brain windows, else the 1-99 and
        5-95 percentile ranges; last the full range."""
        image = self.image
        channel = 0 if self._is_rgb(image) else self.display_channel
        values = _sampled(image.array[channel])
        values = values if values.size else np.zeros(1)
        low, high = float(self._windows[channel, 0]), float(self._windows[channel, 1])
        presets = [("auto (0.5-99.5 %)", low, high)]
        if self._is_rgb(image) and image.array.dtype == np.uint8:
            presets.insert(0, ("photo (0-255)", 0.0, 255.0))  # an 8-bit photo as it is, as display_slice shows it
        if not self._is_rgb(image) and values.min() <= -500:
            presets += [(name, level - width / 2, level + width / 2) for name, width, level in CT_WINDOWS]
        else:
            presets += [(f"{a:g}-{b:g} %", *np.percentile(values, (a, b))) for a, b in ((1, 99), (5, 95))]
        presets.append(("full range", values.min(), values.max()))
        return [{"name": name, "low": float(a), "high": float(b)} for name, a, b in presets]

    # --- interactions --------------------------------------------------------------------------------------

    def prompts(self, slice_index: int = 0, label: int = 1) -> PromptSet:
        """The prompts given on a slice for a structure so far (a copy)."""
        state = self._slices.get(self._key(slice_index, label))
        return state.prompts if state else PromptSet()

    def probability(self, slice_index: int = 0, label: int = 1) -> np.ndarray | None:
        """The current foreground probability ``(H, W)`` float32 of a slice's structure, None before any step."""
        state = self._slices.get(self._key(slice_index, label))
        return None if state is None else state.probability

    def slice_mask(self, slice_index: int = 0, label: int = 1) -> np.ndarray:
        """The current mask ``(H, W)`` bool of a slice's structure (``probability >= 0.5``; empty before any
        step)."""
        probability = self.probability(slice_index, label)
        return np.zeros(self.slice_shape, bool) if probability is None else probability >= 0.5

    def can_redo(self, slice_index: int = 0, label: int = 1) -> bool:
        state = self._slices.get(self._key(slice_index, label))
        return bool(state and state.undone)

    def add(self, prompt: Prompt, slice_index: int = 0, label: int = 1) -> np.ndarray:
        """Add a click, box or scribble on a slice for a structure; returns the new mask ``(H, W)`` bool. The model
        gets every prompt of the slice's structure and its current mask (a manual edit's too)."""
        key = self._key(slice_index, label)
        _check_prompt_inside(prompt, self.slice_shape)
        state = self._slices.get(key) or SliceState()
        prompts = state.prompts
        prompts.add(prompt)
        probability = self._predict(key[1], prompts, state.probability)
        state.push(Step(probability, prompt))
        self._slices[key] = state
        return probability >= 0.5

    def edit(self, kind: str, slice_index: int = 0, label: int = 1, *, points: Sequence[Sequence[float]] = (),
             radius: float = 0.0) -> np.ndarray:
        """A manual edit of a slice's structure (``edits.EDITS``: a brush ``paint`` or ``erase`` stroke through
        ``points`` of ``radius`` pixels, ``fill_holes``, ``largest_component``); returns the new mask ``(H, W)``
        bool. Undone and redone like a prompt."""
        from medseg.interactive.edits import apply_edit

        key = self._key(slice_index, label)
        if len(points):
            _check_prompt_inside(Scribble(tuple(tuple(p) for p in points)), self.slice_shape)
        state = self._slices.get(key) or SliceState()
        mask = apply_edit(self.slice_mask(*key[::-1]), kind, points=points, radius=radius)
        state.push(Step(mask.astype(np.float32)))
        self._slices[key] = state
        return mask

    def undo(self, slice_index: int = 0, label: int = 1) -> np.ndarray:
        """Take back the last step (prompt or manual edit) on a slice's structure; returns the mask ``(H, W)`` bool
        from the steps before it (the probability they had produced, which was also the ``previous`` of the undone
        prompt), or an empty one. A slice with only a propagated mask is cleared. ``redo`` puts it back."""
        key = self._key(slice_index, label)
        state = self._slices.get(key)
        if state is not None and state.steps:
            state.undone.append(state.steps.pop())
        elif state is not None and state.base is not None:
            state.undone.append((_BASE, state.base))
            state.base = None
        if state is not None and state.probability is None and not state.undone:
            del self._slices[key]
        return self.slice_mask(*key[::-1])

    def redo(self, slice_index: int = 0, label: int = 1) -> np.ndarray:
        """Put back the step ``undo`` took last on a slice's structure (nothing when there is none, or a new step
        came since); returns the mask ``(H, W)`` bool."""
        key = self._key(slice_index, label)
        state = self._slices.get(key)
        if state is not None and state.undone:
            step = state.undone.pop()
            if isinstance(step, Step):
                state.steps.append(step)
            else:
                state.base = step[1]
        return self.slice_mask(*key[::-1])

    def propagate(self, slice_index: int, max_distance: int | None = None, label: int = 1) -> list[int]:
        """Carry a slice's current mask of a structure to its neighbours in both directions
        (``propagate.propagate_mask``, with this session's cached embeddings); returns the sorted indices of the
        slices it filled.

        Each filled slice starts over with the propagated probability as its ``base``: prompts that were on it are
        dropped, prompts given afterwards refine it, undoing them all returns to it, one more undo (or a reset)
        clears it. The start slice keeps its prompts. Slices not reached keep what they had. Propagation stops
        where the object ends, at the volume's ends, or ``max_distance`` slices away. Nothing changes when the
        segmenter fails part-way (the results are stored only at the end).
        """
        from medseg.interactive.propagate import propagate_mask

        label, index = self._key(slice_index, label)
        if self.image.ndim != 3:
            raise MedsegError("only a 3D volume can be propagated, this image is 2D")
        if max_distance is not None and max_distance < 1:
            raise MedsegError(f"max_distance {max_distance} must be at least 1", fix="leave it out for no limit")
        probability = self.probability(index, label)
        if probability is None or not (probability >= 0.5).any():
            raise MedsegError(f"slice {index} has no mask to propagate", fix="prompt the object on that slice first")
        reached = propagate_mask(self.segmenter, self.embedding, self.num_slices, index, probability,
                                 max_distance=max_distance)
        checked = {target: self._checked(result) for target, result in reached.items()}
        self._slices.update({(label, target): SliceState(base=result) for target, result in checked.items()})
        return sorted(checked)

    def annotated_slices(self, label: int = 1) -> list[int]:
        """The sorted slices where the user prompted or edited a structure and its mask is not empty (examples
        for an in-context model; propagated slices are not among them)."""
        return sorted(index for (value, index), state in self._slices.items()
                      if value == label and state.steps and (state.probability >= 0.5).any())

    def fill(self, probabilities: dict[int, np.ndarray], label: int = 1) -> list[int]:
        """Give slices a base probability ``(H, W)`` of a structure from another model (the in-context model's
        answer from the annotated examples), as ``propagate`` does: slices with prompts or edits of that structure
        keep them, an empty answer fills nothing. Returns the sorted slices filled."""
        checked = {self._key(index, label)[1]: self._checked(p) for index, p in probabilities.items()}
        filled = [index for index, p in checked.items() if (p >= 0.5).any()
                  and not (self._slices.get((label, index)) and self._slices[(label, index)].steps)]
        self._slices.update({(label, index): SliceState(base=checked[index]) for index in filled})
        return sorted(filled)

    def reset(self, slice_index: int = 0, label: int = 1) -> np.ndarray:
        """Forget every step and the mask of a slice's structure; returns the empty mask ``(H, W)``."""
        key = self._key(slice_index, label)
        self._slices.pop(key, None)
        return self.slice_mask(*key[::-1])

    # --- the result ----------------------------------------------------------------------------------------

    def mask(self) -> np.ndarray:
        """The label map of the whole image, ``(*spatial)`` uint8 (0 background, else the structure's label), on
        the image's grid. Where two structures' masks overlap the one of higher probability wins (a manual edit's
        is 1; a tie goes to the lower label)."""
        out = np.zeros(self.image.spatial_shape, np.uint8)
        for index in sorted({index for _, index in self._slices}):
            target = out if self.image.ndim == 2 else out[index]
            target[...] = self._label_slice(index)
        return out

    def _label_slice(self, index: int) -> np.ndarray:
        """The label map ``(H, W)`` uint8 of one slice (see ``mask``)."""
        out = np.zeros(self.slice_shape, np.uint8)
        best = np.full(self.slice_shape, 0.5, np.float32)
        for label in sorted(label for label, i in self._slices if i == index):
            probability = self._slices[(label, index)].probability
            if probability is None:
                continue
            wins = (probability >= 0.5) & ((probability > best) | (out == 0))
            out[wins], best[wins] = label, probability[wins]
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

    def _key(self, index: int, label: int) -> tuple[int, int]:
        """``(label, slice)`` after checking both."""
        return _check_label(label), self._check_index(index)

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


def _check_label(label: int) -> int:
    """``label`` as an int when it is a structure's value (1..255); else a ``MedsegError``."""
    if not isinstance(label, (int, np.integer)) or not 1 <= label <= MAX_LABEL:
        raise MedsegError(f"label {label} is outside 1..{MAX_LABEL}", fix="use a label value from 1 to 255")
    return int(label)


def _plane(array: np.ndarray, axis: int, index: int, ndim: int) -> np.ndarray:
    """``array (C, *spatial)`` cut at ``index`` along spatial ``axis`` -> ``(C, H, W)`` (a 2D image: axis 0, index
    0, itself)."""
    if ndim == 2:
        if (axis, index) != (0, 0):
            raise MedsegError(f"a 2D image has one plane, not axis {axis} index {index}", fix="use axis 0, index 0")
        return array
    if axis not in (0, 1, 2):
        raise MedsegError(f"axis {axis} does not exist, a volume has axes 0, 1 and 2")
    size = array.shape[1 + axis]
    if not 0 <= index < size:
        raise MedsegError(f"plane {index} does not exist along axis {axis} ({size} planes)",
                          fix=f"use 0..{size - 1}")
    return np.take(array, index, axis=1 + axis)


def _sampled(channel: np.ndarray) -> np.ndarray:
    """The finite values of a regular subsample (at most ``_WINDOW_SAMPLES``) of one channel, float64."""
    values = channel.reshape(-1)
    values = values[:: max(1, values.size // _WINDOW_SAMPLES)].astype(np.float64)
    return values[np.isfinite(values)]


def _percentile_windows(array: np.ndarray) -> np.ndarray:
    """``(C, 2)`` low/high intensity per channel of ``array (C, *spatial)`` (from a regular subsample)."""
    windows = np.zeros((array.shape[0], 2), np.float64)
    for c in range(array.shape[0]):
        values = _sampled(array[c])
        if values.size:
            windows[c] = np.percentile(values, WINDOW_PERCENTILES)
    return windows


def _window(array: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` -> uint8, channel ``c`` mapped from ``windows[c]`` = (low, high) to 0..255."""
    low, high = windows[:, 0, None, None], windows[:, 1, None, None]
    scaled = (np.nan_to_num(array.astype(np.float32)) - low) / np.maximum(high - low, 1e-8)
    return (np.clip(scaled, 0, 1) * 255).round().astype(np.uint8)

