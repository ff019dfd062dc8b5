"""Prompts (clicks, boxes, scribbles), their mapping between an image's pixel grid and the model's grid, and
their encoding as prompt maps.

Coordinates are in array index order of a 2D slice, ``(row, col)`` = ``(y, x)``, in pixels of the grid they
belong to (continuous: a click at ``(10.0, 20.0)`` is the centre of pixel ``[10, 20]``). A ``Box`` holds the
first and last pixel it covers (inclusive). A ``Scribble`` is a polyline through ``points``.

``encode_prompts`` renders a ``PromptSet`` on the model grid as ``PROMPT_CHANNELS`` float maps in [0, 1]:

    0 positive clicks   1 negative clicks   2 positive scribbles   3 negative scribbles   4 box   5 previous mask

(the previous mask channel holds the probability of the last prediction, 0 before the first). Keeping clicks
and scribbles apart, as ScribblePrompt does, lets the network learn how much to trust each kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence, Union

import numpy as np
from skimage.draw import disk, line

from medseg.errors import MedsegError
from medseg.nets.promptable_unet import PROMPT_CHANNELS

CHANNEL_NAMES = ("positive_clicks", "negative_clicks", "positive_scribbles", "negative_scribbles", "box",
                 "previous_mask")


@dataclass(frozen=True)
class Click:
    """One click at ``point = (row, col)``; ``positive`` marks the object, negative marks background."""

    point: tuple[float, float]
    positive: bool = True

    def scaled(self, factor: Sequence[float]) -> "Click":
        return replace(self, point=_scale_point(self.point, factor))


@dataclass(frozen=True)
class Box:
    """An axis-aligned box around the object: ``start = (row0, col0)`` and ``stop = (row1, col1)``, inclusive."""

    start: tuple[float, float]
    stop: tuple[float, float]

    def scaled(self, factor: Sequence[float]) -> "Box":
        return replace(self, start=_scale_point(self.start, factor), stop=_scale_point(self.stop, factor))


@dataclass(frozen=True)
class Scribble:
    """A stroke through ``points`` (``(N, 2)`` rows of ``(row, col)``); ``positive`` as for ``Click``."""

    points: tuple[tuple[float, float], ...]
    positive: bool = True

    def __post_init__(self) -> None:
        if len(self.points) == 0:
            raise MedsegError("a scribble needs at least one point")
        object.__setattr__(self, "points", tuple((float(r), float(c)) for r, c in self.points))

    def scaled(self, factor: Sequence[float]) -> "Scribble":
        return replace(self, points=tuple(_scale_point(p, factor) for p in self.points))


Prompt = Union[Click, Box, Scribble]


@dataclass
class PromptSet:
    """The prompts given so far for one object on one slice, in order (the last one can be undone)."""

    prompts: list[Prompt] = field(default_factory=list)

    def add(self, prompt: Prompt) -> "PromptSet":
        if not isinstance(prompt, (Click, Box, Scribble)):
            raise MedsegError(f"not a prompt: {prompt!r} (fix: use Click, Box or Scribble)")
        self.prompts.append(prompt)
        return self

    def undo(self) -> Prompt | None:
        return self.prompts.pop() if self.prompts else None

    def scaled(self, factor: Sequence[float]) -> "PromptSet":
        return PromptSet([p.scaled(factor) for p in self.prompts])

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def clicks(self) -> list[Click]:
        return [p for p in self.prompts if isinstance(p, Click)]

    @property
    def boxes(self) -> list[Box]:
        return [p for p in self.prompts if isinstance(p, Box)]

    @property
    def scribbles(self) -> list[Scribble]:
        return [p for p in self.prompts if isinstance(p, Scribble)]


def _scale_point(point: Sequence[float], factor: Sequence[float]) -> tuple[float, float]:
    """Pixel centres map to pixel centres: ``(p + 0.5) * factor - 0.5``."""
    return tuple(float((p + 0.5) * f - 0.5) for p, f in zip(point, factor))


def grid_factor(source_shape: Sequence[int], target_shape: Sequence[int]) -> tuple[float, float]:
    """Per-axis factor that maps coordinates on ``source_shape`` to ``target_shape`` (``PromptSet.scaled``)."""
    return tuple(t / s for s, t in zip(source_shape, target_shape))


def click_radius(shape: Sequence[int]) -> float:
    """Radius in pixels of a rendered click or scribble: 1 % of the grid's mean side, at least 1.5 px (2.6 at 256)."""
    return max(1.5, 0.01 * float(np.mean(shape)))


def _clip_index(value: float, size: int) -> int:
    return int(min(max(round(value), 0), size - 1))


def render_clicks(clicks: Sequence[Click], shape: Sequence[int], radius: float) -> np.ndarray:
    """Discs of ``radius`` at the clicks: ``(H, W)`` float32, 1 inside."""
    out = np.zeros(tuple(shape), np.float32)
    for click in clicks:
        centre = (_clip_index(click.point[0], shape[0]), _clip_index(click.point[1], shape[1]))
        rows, cols = disk(centre, radius, shape=tuple(shape))
        out[rows, cols] = 1.0
        out[centre] = 1.0
    return out


def render_scribbles(scribbles: Sequence[Scribble], shape: Sequence[int], radius: float) -> np.ndarray:
    """Polylines through the scribbles' points, thickened to ``radius``: ``(H, W)`` float32."""
    out = np.zeros(tuple(shape), bool)
    for scribble in scribbles:
        points = [(_clip_index(r, shape[0]), _clip_index(c, shape[1])) for r, c in scribble.points]
        out[points[0]] = True
        for (r0, c0), (r1, c1) in zip(points[:-1], points[1:]):
            rows, cols = line(r0, c0, r1, c1)
            out[rows, cols] = True
    if radius > 1 and out.any():
        from scipy.ndimage import binary_dilation

        offsets = np.arange(-int(radius), int(radius) + 1)
        footprint = (offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius ** 2
        out = binary_dilation(out, structure=footprint)
    return out.astype(np.float32)


def render_boxes(boxes: Sequence[Box], shape: Sequence[int]) -> np.ndarray:
    """Filled boxes (1 inside, inclusive corners): ``(H, W)`` float32."""
    out = np.zeros(tuple(shape), np.float32)
    for box in boxes:
        r0, r1 = sorted((_clip_index(box.start[0], shape[0]), _clip_index(box.stop[0], shape[0])))
        c0, c1 = sorted((_clip_index(box.start[1], shape[1]), _clip_index(box.stop[1], shape[1])))
        out[r0:r1 + 1, c0:c1 + 1] = 1.0
    return out


def encode_prompts(prompts: PromptSet, shape: Sequence[int], previous: np.ndarray | None = None,
                   radius: float | None = None) -> np.ndarray:
    """Prompt maps ``(PROMPT_CHANNELS, H, W)`` float32 on a grid of ``shape`` (prompts already on that grid).

    ``previous``: the last prediction's foreground probability ``(H, W)`` on the same grid, or None.
    """
    shape = tuple(int(s) for s in shape)
    radius = click_radius(shape) if radius is None else radius
    maps = np.zeros((PROMPT_CHANNELS, *shape), np.float32)
    clicks, scribbles = prompts.clicks, prompts.scribbles
    maps[0] = render_clicks([c for c in clicks if c.positive], shape, radius)
    maps[1] = render_clicks([c for c in clicks if not c.positive], shape, radius)
    maps[2] = render_scribbles([s for s in scribbles if s.positive], shape, radius / 2)
    maps[3] = render_scribbles([s for s in scribbles if not s.positive], shape, radius / 2)
    maps[4] = render_boxes(prompts.boxes, shape)
    if previous is not None:
        if tuple(previous.shape) != shape:
            raise MedsegError(f"previous mask has shape {tuple(previous.shape)}, the grid is {shape}")
        maps[5] = np.clip(previous, 0.0, 1.0)
    return maps
