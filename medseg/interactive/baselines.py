"""Classical interactive methods behind the ``Segmenter`` protocol, driven by the same prompts as the learned model:
random walker and marker watershed (scikit-image), GrabCut (OpenCV, optional), and the automatic pipeline model as
a prompt-free reference.

Seeds from prompts (``seed_labels``), on the image grid: positive clicks and scribbles are object seeds (1),
negative ones background seeds (2); the pixels outside a box are background and a disc at the box centre is an
object seed (the object is taken to cover its box's centre, true for compact objects such as polyps). Without a box
the image border is background (where no positive prompt lies). The seeds only grow as prompts are added (a first
negative click does not remove the border seeds), so the answers change smoothly between interactions; the one
exception: a negative prompt on the box-centre disc removes that disc (the object does not cover the centre).
The methods are stateless: each prediction starts afresh from all the prompts so far (``previous`` is ignored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from medseg.errors import MedsegError
from medseg.interactive.prompts import Click, PromptSet, click_radius, render_boxes, render_clicks, render_scribbles

OBJECT, BACKGROUND = 1, 2


def normalise(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """``image (C, H, W)`` -> ``(H, W, C)`` float32 in [0, 1], each channel clipped to its ``low``/``high``
    percentiles (robust to outliers: specular highlights, hot pixels)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise MedsegError(f"an image slice must be (C, H, W), got shape {image.shape}", fix="pass one 2D slice")
    out = np.empty(image.shape[1:] + image.shape[:1], np.float32)
    for index, channel in enumerate(image):
        lo, hi = np.percentile(channel, [low, high])
        out[..., index] = np.clip((channel - lo) / (hi - lo), 0, 1) if hi > lo else 0.0
    return out


def seed_labels(prompts: PromptSet, shape: tuple[int, int], *, box_seed: float = 0.15) -> np.ndarray:
    """Seeds ``(H, W)`` uint8: 0 unknown, ``OBJECT``, ``BACKGROUND`` (see the module docstring). Negative prompts
    win over positive ones where they overlap; explicit prompts override the box. The box-centre seed has a radius
    of ``box_seed`` x the box's shorter side (at least a click's radius)."""
    radius = click_radius(shape)
    labels = np.zeros(shape, np.uint8)
    if prompts.boxes:
        labels[render_boxes(prompts.boxes, shape) == 0] = BACKGROUND
    positive = (render_clicks([c for c in prompts.clicks if c.positive], shape, radius) > 0) | \
        (render_scribbles([s for s in prompts.scribbles if s.positive], shape, radius / 2) > 0)
    negative = (render_clicks([c for c in prompts.clicks if not c.positive], shape, radius) > 0) | \
        (render_scribbles([s for s in prompts.scribbles if not s.positive], shape, radius / 2) > 0)
    if prompts.boxes:
        for box in prompts.boxes:
            centre = ((box.start[0] + box.stop[0]) / 2, (box.start[1] + box.stop[1]) / 2)
            side = min(abs(box.stop[0] - box.start[0]), abs(box.stop[1] - box.start[1])) + 1
            centre_seed = render_clicks([Click(centre)], shape, max(radius, box_seed * side)) > 0
            if not (centre_seed & negative).any():
                positive |= centre_seed
    labels[negative] = BACKGROUND
    labels[positive & ~negative] = OBJECT
    if not prompts.boxes:
        border = np.ones(shape, bool)
        border[1:-1, 1:-1] = False
        labels[border & (labels == 0)] = BACKGROUND
    return labels


class RandomWalkerSegmenter:
    """``skimage.segmentation.random_walker`` on the normalised colour image; probability = the walker's
    probability of reaching an object seed first. ``beta``: edge penalty (higher: edges stop the walk more).
    The linear system is solved directly (``mode="bf"``: about 0.3 s at 256x256; the conjugate-gradient modes took
    4-20 s there with seeds only on the border).

    The direct solve grows faster than the pixel count (1.7 GB and 25 s for one click at 1024x1024), so a slice of
    more than ``max_pixels`` pixels is walked on a grid coarser by the smallest integer factor that fits (block
    means of the image; a block is a seed when it holds seeds of one kind only, negative winning as in
    ``seed_labels``) and the probability is interpolated back (bilinear), with the full-resolution seeds then
    set to 1 / 0 as the walker itself does. ``max_pixels=None`` walks every slice at full resolution.
    """

    name = "random_walker"

    def __init__(self, *, beta: float = 130.0, max_pixels: int | None = 512 * 512):
        if max_pixels is not None and int(max_pixels) < 64:
            raise MedsegError(f"max_pixels {max_pixels} is too small for a random walk", fix="use at least 64")
        self.beta = float(beta)
        self.max_pixels = None if max_pixels is None else int(max_pixels)

    def embed(self, image: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` -> normalised ``(H, W, C)``."""
        return normalise(image)

    def factor(self, shape: tuple[int, int]) -> int:
        """The integer downsampling factor for a ``(H, W)`` slice: 1 when it has at most ``max_pixels`` pixels."""
        pixels = int(shape[0]) * int(shape[1])
        if self.max_pixels is None or pixels <= self.max_pixels:
            return 1
        factor = int(np.ceil(np.sqrt(pixels / self.max_pixels)))
        while -(-shape[0] // factor) * -(-shape[1] // factor) > self.max_pixels:  # ceil division by the factor
            factor += 1
        return factor

    def predict(self, embedding: np.ndarray, prompts: PromptSet, previous: np.ndarray | None = None) -> np.ndarray:
        """Object probability ``(H, W)`` float32 in [0, 1] for the normalised ``(H, W, C)`` slice."""
        from skimage.segmentation import random_walker

        shape = embedding.shape[:2]
        labels = seed_labels(prompts, shape)
        if not (labels == OBJECT).any():
            return np.zeros(shape, np.float32)
        factor = self.factor(shape)
        coarse_image = _block_mean(embedding, factor) if factor > 1 else embedding
        coarse_labels = _block_seeds(labels, factor) if factor > 1 else labels
        if not (coarse_labels == OBJECT).any():  # every object seed shares its block with a background seed
            return np.zeros(shape, np.float32)
        probability = random_walker(coarse_image, coarse_labels.astype(np.int32), beta=self.beta, mode="bf",
                                    channel_axis=-1, return_full_prob=True)[0]
        if factor > 1:
            probability = _upsample(probability.astype(np.float32), factor, shape)
            probability[labels == OBJECT] = 1.0
            probability[labels == BACKGROUND] = 0.0
        return np.clip(probability, 0, 1).astype(np.float32)


def _blocks(array: np.ndarray, factor: int) -> np.ndarray:
    """``(H, W, ...)`` -> ``(h, factor, w, factor, ...)`` with ``h = ceil(H / factor)``; the edge is padded by
    repeating the last row / column (so edge blocks are not darkened by zeros)."""
    pad = [(0, -n % factor) for n in array.shape[:2]] + [(0, 0)] * (array.ndim - 2)
    padded = np.pad(array, pad, mode="edge")
    h, w = padded.shape[0] // factor, padded.shape[1] // factor
    return padded.reshape(h, factor, w, factor, *array.shape[2:])


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """``(H, W, C)`` float32 -> block means ``(h, w, C)``."""
    return _blocks(image, factor).mean(axis=(1, 3), dtype=np.float32)


def _block_seeds(labels: np.ndarray, factor: int) -> np.ndarray:
    """Seeds ``(H, W)`` -> ``(h, w)``: ``BACKGROUND`` where a block holds a background seed, else ``OBJECT``
    where it holds an object seed, else 0 (the edge padding repeats the border, so border seeds stay seeds)."""
    blocks = _blocks(labels, factor)
    background = (blocks == BACKGROUND).any(axis=(1, 3))
    coarse = np.where((blocks == OBJECT).any(axis=(1, 3)), OBJECT, 0).astype(np.uint8)
    coarse[background] = BACKGROUND
    return coarse


def _upsample(probability: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear ``(h, w)`` -> ``(H, W)``: coarse pixel ``i`` covers fine pixels ``[i * factor, (i + 1) * factor)``,
    so fine pixel ``y`` samples the coarse grid at ``(y + 0.5) / factor - 0.5`` (edges clamped)."""
    from scipy.ndimage import map_coordinates

    axes = [np.clip((np.arange(n) + 0.5) / factor - 0.5, 0, m - 1) for n, m in zip(shape, probability.shape)]
    grid = np.meshgrid(*axes, indexing="ij", sparse=True)
    coords = np.broadcast_arrays(*grid)
    return map_coordinates(probability, coords, order=1, mode="nearest").astype(np.float32)


class WatershedSegmenter:
    """Marker-controlled watershed (``skimage.segmentation.watershed``) on the Sobel gradient magnitude (the
    root-sum-square over colour channels); the object is the basin flooded from the object seeds (0/1)."""

    name = "watershed"

    def embed(self, image: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` -> gradient magnitude ``(H, W)`` float32."""
        from skimage.filters import sobel

        data = normalise(image)
        return np.sqrt(sum(sobel(data[..., c]) ** 2 for c in range(data.shape[-1]))).astype(np.float32)

    def predict(self, embedding: np.ndarray, prompts: PromptSet, previous: np.ndarray | None = None) -> np.ndarray:
        from skimage.segmentation import watershed

        labels = seed_labels(prompts, embedding.shape)
        if not (labels == OBJECT).any():
            return np.zeros(embedding.shape, np.float32)
        return (watershed(embedding, labels.astype(np.int32)) == OBJECT).astype(np.float32)


class GrabCutSegmenter:
    """OpenCV's GrabCut (colour GMMs + graph cut) on the 8-bit normalised image (grey images as 3 equal channels).

    Initial mask: definite background outside a box (or on the border without one), probable object inside the
    box; without a box, probable object within ``reach`` x the image's mean side of a positive seed and probable
    background elsewhere. Click and scribble seeds are definite object/background. ``iterations`` GrabCut rounds;
    OpenCV's random generator is reset to ``seed`` before each call so results repeat.
    """

    name = "grabcut"

    def __init__(self, *, iterations: int = 5, reach: float = 0.15, seed: int = 0):
        self.iterations, self.reach, self.seed = int(iterations), float(reach), int(seed)

    def embed(self, image: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` -> ``(H, W, 3)`` uint8 (first three channels, or the first repeated)."""
        _import_cv2()
        data = normalise(image)
        data = data[..., :3] if data.shape[-1] >= 3 else np.repeat(data[..., :1], 3, axis=-1)
        return np.ascontiguousarray(np.round(data * 255).astype(np.uint8))

    def predict(self, embedding: np.ndarray, prompts: PromptSet, previous: np.ndarray | None = None) -> np.ndarray:
        cv2 = _import_cv2()
        from scipy.ndimage import distance_transform_edt

        shape = embedding.shape[:2]
        seeds = seed_labels(prompts, shape)
        if not (seeds == OBJECT).any():
            return np.zeros(shape, np.float32)
        if prompts.boxes:
            mask = np.where(render_boxes(prompts.boxes, shape) > 0, cv2.GC_PR_FGD, cv2.GC_BGD).astype(np.uint8)
        else:
            near = distance_transform_edt(seeds != OBJECT) <= self.reach * float(np.mean(shape))
            mask = np.where(near, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
        mask[seeds == OBJECT] = cv2.GC_FGD
        mask[seeds == BACKGROUND] = cv2.GC_BGD
        if not np.isin(mask, (cv2.GC_BGD, cv2.GC_PR_BGD)).any():
            return (mask > 0).astype(np.float32)  # nothing can be background: everything is object
        cv2.setRNGSeed(self.seed)
        background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.grabCut(embedding, mask, None, background, foreground, self.iterations, cv2.GC_INIT_WITH_MASK)
        return np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)


def _import_cv2():
    try:
        import cv2
    except ImportError:
        raise MedsegError("GrabCut needs OpenCV, which is not installed",
                          fix="pip install opencv-python-headless") from None
    return cv2


class AutomaticSegmenter:
    """The fully automatic pipeline model as a reference: ignores prompts and returns its foreground as 0/1.

    ``predictor``: anything with ``predict(medseg.io.Image) -> Image`` (a ``medseg.inference.Predictor`` of a 2D
    configuration); ``label``: the label value that is the object (None: every label > 0). ``embed`` runs the
    model once on the slice (unit spacing: the slice's geometry is not known here).
    """

    name = "automatic"

    def __init__(self, predictor: Any, *, label: int | None = None):
        self.predictor, self.label = predictor, label

    @classmethod
    def from_folder(cls, model_folder: str | Path, *, label: int | None = None, device: str = "cpu",
                    **options) -> "AutomaticSegmenter":
        from medseg.inference.predictor import Predictor

        return cls(Predictor.from_folder(model_folder, device=device, **options), label=label)

    def embed(self, image: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` -> the model's object mask ``(H, W)`` float32 0/1."""
        from medseg.io import Image

        labels = self.predictor.predict(Image.from_array(np.asarray(image, np.float32), channel_axis=True)).array[0]
        mask = labels > 0 if self.label is None else labels == self.label
        return mask.astype(np.float32)

    def predict(self, embedding: np.ndarray, prompts: PromptSet, previous: np.ndarray | None = None) -> np.ndarray:
        return embedding.copy()


BASELINES: dict[str, Callable[..., Any]] = {
    "random_walker": RandomWalkerSegmenter,
    "watershed": WatershedSegmenter,
    "grabcut": GrabCutSegmenter,
}


def create_baseline(name: str, **options) -> Any:
    """A classical segmenter by registry name; options that are None keep their defaults."""
    if name not in BASELINES:
        raise MedsegError(f"unknown baseline {name!r}", fix=f"use one of {', '.join(BASELINES)}")
    return BASELINES[name](**{k: v for k, v in options.items() if v is not None})
