"""The interaction simulator: prompts a user would give, derived from the ground truth ``target`` and the current
``prediction`` of one object on one 2D slice (masks ``(H, W)`` bool; probabilities are thresholded at 0.5).

First prompt (from the ground truth alone):
    ``first_click``     the interior point farthest from the object's boundary (maximum of the EDT; the image edge
                        counts as boundary), optionally drawn among near-maximal points for training variety;
    ``first_box``       the tight bounding box of the object's largest connected component (a user boxes one
                        polyp, not the hull of three scattered ones; the others are left to corrections), each
                        side moved by up to ``jitter`` x the side's length;
    ``first_scribble``  a stroke inside the object (positive) or along a band just outside it (negative).
Corrections (from the errors of the current prediction), as in RITM / ScribblePrompt:
    ``next_click``      in the largest connected error region (FN or FP, 8-connected, by area), at the point
                        farthest from that region's boundary; positive in a false-negative region, else negative;
    ``next_scribble``   a stroke inside that region, with the same sign.

Modes (``MODES``) say which prompts a simulated user gives:
    ``clicks``      a first click, then one corrective click per interaction;
    ``box``         one box and nothing more ("box only": the Dice curve stays flat after the first interaction);
    ``scribbles``   a positive scribble, then one corrective scribble per interaction;
    ``box+clicks``  a box, then corrective clicks.

An empty target has no object to prompt: every function returns None for it, as do the corrective functions
when the prediction has no error. Randomness comes only from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import cc3d
import edt
import numpy as np

from medseg.errors import MedsegError
from medseg.interactive.prompts import Box, Click, Prompt, PromptSet, Scribble

MODES = ("clicks", "box", "scribbles", "box+clicks")

_NEIGHBOURS = np.array([(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)])


def inner_distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance ``(H, W)`` float32 of each mask pixel to the nearest pixel outside the mask or outside
    the image (0 outside the mask)."""
    return edt.edt(np.ascontiguousarray(mask, dtype=np.uint8), black_border=True).astype(np.float32)


def _as_mask(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise MedsegError(f"the {name} must be a 2D (H, W) mask, got shape {array.shape}",
                          fix="pass one slice of one object")
    return array >= 0.5 if array.dtype.kind == "f" else array.astype(bool)


def _farthest_point(mask: np.ndarray, rng: np.random.Generator | None, tolerance: float) -> tuple[float, float]:
    """A point of ``mask`` at maximal distance from its boundary; with ``rng`` and ``tolerance > 0`` a random one
    among the points whose distance is at least ``(1 - tolerance)`` x the maximum."""
    distance = inner_distance(mask)
    peak = float(distance.max())
    if rng is None or tolerance <= 0:
        row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
        return float(row), float(col)
    rows, cols = np.nonzero(distance >= peak * (1.0 - tolerance))
    pick = int(rng.integers(len(rows)))
    return float(rows[pick]), float(cols[pick])


def first_click(target: np.ndarray, rng: np.random.Generator | None = None, *, tolerance: float = 0.0
                ) -> Click | None:
    """A positive click at the interior point of ``target (H, W)`` farthest from its boundary (None if empty).

    ``tolerance`` in [0, 1): draw the point with ``rng`` among points within that fraction of the maximal
    distance (0 = the maximum itself; training uses e.g. 0.3 so the network does not learn one position).
    """
    target = _as_mask(target, "target")
    if not target.any():
        return None
    return Click(_farthest_point(target, rng, tolerance), positive=True)


def first_box(target: np.ndarray, rng: np.random.Generator | None = None, *, jitter: float = 0.0) -> Box | None:
    """The tight inclusive bounding box of the largest 8-connected component of ``target (H, W)``, each side moved
    independently by a uniform amount in ``[-jitter, jitter]`` x that side's length (rounded to pixels, clipped to
    the image; None if empty)."""
    target = _as_mask(target, "target")
    if not target.any():
        return None
    rows, cols = np.nonzero(largest_component(target))
    start, stop = [rows.min(), cols.min()], [rows.max(), cols.max()]
    if jitter > 0:
        if rng is None:
            raise MedsegError("a jittered box needs a random generator", fix="pass rng=np.random.default_rng(seed)")
        for axis in range(2):
            side = stop[axis] - start[axis] + 1
            low, high = rng.uniform(-jitter, jitter, size=2) * side
            start[axis] = int(np.clip(round(start[axis] + low), 0, target.shape[axis] - 1))
            stop[axis] = int(np.clip(round(stop[axis] + high), 0, target.shape[axis] - 1))
            if start[axis] > stop[axis]:
                start[axis], stop[axis] = stop[axis], start[axis]
    return Box((float(start[0]), float(start[1])), (float(stop[0]), float(stop[1])))


def first_scribble(target: np.ndarray, rng: np.random.Generator, *, positive: bool = True,
                   margin: float | None = None) -> Scribble | None:
    """A synthetic stroke for ``target (H, W)`` (None if empty).

    Positive: a stroke inside the object's largest component (``stroke_inside``: along its skeleton when it is
    elongated, a smooth random walk through its core when it is compact).
    Negative: a walk along the skeleton of a band outside the object, between ``margin`` and ``2 x margin``
    pixels from it (default: 10 % of the object's equivalent diameter, at least 3 px), at most a third of the
    band's length, so the stroke hugs one side of the object without touching it.
    """
    target = _as_mask(target, "target")
    if not target.any():
        return None
    if positive:
        return stroke_inside(largest_component(target), rng, positive=True)
    if margin is None:
        margin = max(3.0, 0.1 * 2.0 * float(np.sqrt(target.sum() / np.pi)))
    outside = edt.edt(np.ascontiguousarray(~target, dtype=np.uint8), black_border=False)
    band = (outside > margin) & (outside <= 2 * margin)
    if not band.any():
        band = ~target
        if not band.any():
            return None
    return stroke_inside(largest_component(band), rng, positive=False, max_fraction=1 / 3)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of ``mask (H, W)`` (ties: the lowest label), as a bool mask."""
    labels = cc3d.connected_components(np.ascontiguousarray(mask, dtype=np.uint8), connectivity=8)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == int(np.argmax(counts))


def stroke_inside(region: np.ndarray, rng: np.random.Generator, *, positive: bool,
                  max_fraction: float = 1.0) -> Scribble:
    """A scribble inside a connected ``region (H, W)``; every point and every segment lies in ``region``.

    Elongated regions (skeleton at least as long as the region's equivalent diameter: vessels, rims of error,
    bands): a walk along the skeleton from a random skeleton pixel that goes on to unvisited 8-neighbours
    (preferring to keep its direction) in both directions, at most ``max_fraction`` of the skeleton long.
    Compact regions (blobs, whose skeleton is a point or a short line): a smooth random walk of a few steps through
    the region's core (points at least 30 % of the maximal distance from the boundary).
    """
    from skimage.morphology import skeletonize

    skeleton = skeletonize(region)
    diameter = 2.0 * float(np.sqrt(region.sum() / np.pi))
    pixels = np.argwhere(skeleton)
    if len(pixels) < diameter:
        return Scribble(tuple(_core_walk(region, rng)), positive=positive)
    start = tuple(int(v) for v in pixels[int(rng.integers(len(pixels)))])
    budget = max(1, int(round(max_fraction * len(pixels))))
    visited = {start}
    forward = _walk(skeleton, start, visited, budget)
    backward = _walk(skeleton, start, visited, budget - len(forward))
    path = backward[::-1] + [start] + forward
    return Scribble(tuple(_simplify_inside(path, region)), positive=positive)


def _core_walk(region: np.ndarray, rng: np.random.Generator, steps: int = 4) -> list[tuple[float, float]]:
    """A polyline of up to ``steps`` segments, each about a quarter of the region's equivalent diameter long,
    with a heading that turns smoothly; a step is retried with other headings and shorter lengths and dropped
    when every try would leave the core."""
    from skimage.draw import line

    distance = inner_distance(region)
    core = distance >= max(1.0, 0.3 * float(distance.max()))
    if not core.any():
        core = region
    pixels = np.argwhere(core)
    current = pixels[int(rng.integers(len(pixels)))]
    points = [current]
    length = max(2.0, 0.5 * float(np.sqrt(region.sum() / np.pi)))
    heading = rng.uniform(0.0, 2.0 * np.pi)
    for _ in range(steps):
        for attempt in range(12):
            turn = heading + rng.normal(0.0, 0.5 + 0.25 * attempt)
            scale = length * (1.0 - attempt / 12)
            target = np.round(current + scale * np.array([np.sin(turn), np.cos(turn)])).astype(int)
            if not (0 <= target[0] < region.shape[0] and 0 <= target[1] < region.shape[1]):
                continue
            rows, cols = line(int(current[0]), int(current[1]), int(target[0]), int(target[1]))
            if core[rows, cols].all() and not np.array_equal(target, current):
                heading, current = turn, target
                points.append(current)
                break
    return [(float(r), float(c)) for r, c in points]


def _walk(skeleton: np.ndarray, start: tuple[int, int], visited: set, budget: int) -> list[tuple[int, int]]:
    path: list[tuple[int, int]] = []
    current, direction = np.array(start), None
    while len(path) < budget:
        options = []
        for step in _NEIGHBOURS:
            row, col = current + step
            if 0 <= row < skeleton.shape[0] and 0 <= col < skeleton.shape[1] and skeleton[row, col] \
                    and (int(row), int(col)) not in visited:
                options.append(step)
        if not options:
            break
        if direction is not None:  # keep going straight where the skeleton allows it
            options.sort(key=lambda s: -float(np.dot(s, direction)) / float(np.linalg.norm(s)))
        direction = options[0]
        current = current + direction
        visited.add((int(current[0]), int(current[1])))
        path.append((int(current[0]), int(current[1])))
    return path


def _simplify_inside(path: list[tuple[int, int]], region: np.ndarray) -> list[tuple[float, float]]:
    """Greedy polyline simplification: extend each segment while the line to the next path pixel stays inside."""
    from skimage.draw import line

    kept = [path[0]]
    for index in range(1, len(path)):
        candidate = path[index]
        rows, cols = line(*kept[-1], *candidate)
        if not region[rows, cols].all():
            kept.append(path[index - 1])
    if path[-1] != kept[-1]:
        kept.append(path[-1])
    return [(float(r), float(c)) for r, c in kept]


def largest_error(prediction: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, bool] | None:
    """The largest connected error region of ``prediction`` against ``target`` (both ``(H, W)``) and whether it
    is a false-negative region (True) or a false-positive one (False); None when there is no error. Ties in
    area go to the false negatives (missing object is worse than extra background)."""
    prediction, target = _as_mask(prediction, "prediction"), _as_mask(target, "target")
    if prediction.shape != target.shape:
        raise MedsegError(f"prediction {prediction.shape} and target {target.shape} differ in shape",
                          fix="predict on the target's grid")
    best: tuple[np.ndarray, bool] | None = None
    best_area = 0
    for errors, is_false_negative in ((target & ~prediction, True), (prediction & ~target, False)):
        if not errors.any():
            continue
        region = largest_component(errors)
        area = int(region.sum())
        if area > best_area:
            best, best_area = (region, is_false_negative), area
    return best


def next_click(prediction: np.ndarray, target: np.ndarray) -> Click | None:
    """A corrective click at the point farthest from the boundary of the largest error region (``largest_error``):
    positive in a false-negative region, negative in a false-positive one; None when the prediction is exact."""
    error = largest_error(prediction, target)
    if error is None:
        return None
    region, is_false_negative = error
    return Click(_farthest_point(region, None, 0.0), positive=is_false_negative)


def next_scribble(prediction: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> Scribble | None:
    """A corrective stroke inside the largest error region (``stroke_inside``), positive in a false-negative region;
    None when the prediction is exact."""
    error = largest_error(prediction, target)
    if error is None:
        return None
    region, is_false_negative = error
    return stroke_inside(region, rng, positive=is_false_negative)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise MedsegError(f"unknown interaction mode {mode!r}", fix=f"use one of {', '.join(MODES)}")


def initial_prompts(mode: str, target: np.ndarray, rng: np.random.Generator, *, box_jitter: float = 0.0,
                    click_tolerance: float = 0.0) -> PromptSet | None:
    """The first interaction of ``mode`` for ``target (H, W)`` as a one-prompt ``PromptSet``; None if empty."""
    _check_mode(mode)
    prompt: Prompt | None
    if mode == "clicks":
        prompt = first_click(target, rng, tolerance=click_tolerance)
    elif mode == "scribbles":
        prompt = first_scribble(target, rng, positive=True)
    else:
        prompt = first_box(target, rng, jitter=box_jitter)
    return None if prompt is None else PromptSet([prompt])


def corrective_prompt(mode: str, prediction: np.ndarray, target: np.ndarray, rng: np.random.Generator
                      ) -> Prompt | None:
    """The next interaction of ``mode`` given the current ``prediction`` (``(H, W)`` mask or probability).

    None when ``mode`` gives no corrections (``box``) or the prediction has no error left.
    """
    _check_mode(mode)
    if mode == "box":
        return None
    if mode == "scribbles":
        return next_scribble(prediction, target, rng)
    return next_click(prediction, target)
