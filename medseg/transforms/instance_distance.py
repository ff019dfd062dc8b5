"""Instances as a distance map and back: the training target of an instance head, and the marker watershed that
turns a predicted foreground and distance map into separate objects (touching nuclei or cells).

``distance_target``: each object's Euclidean distance to its own border (a touching neighbour counts as border),
divided by the object's maximum, so every object peaks at 1 in its centre and falls to 0 at its edge, whatever
its size. ``instances_from_distance``: markers are the connected parts of ``distance > marker_threshold`` inside
the foreground; a watershed of ``-distance`` from them, confined to the foreground, grows each marker into one
object; foreground parts that hold no marker become objects of their own.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

MARKER_THRESHOLD = 0.5  # half way from an object's edge to its centre


def object_borders(instances: np.ndarray) -> np.ndarray:
    """``(*S)`` bool: voxels of an object with a face neighbour outside it (background or another object)."""
    instances = np.asarray(instances)
    border = np.zeros(instances.shape, dtype=bool)
    for axis in range(instances.ndim):
        for shift in (1, -1):
            neighbour = np.roll(instances, shift, axis=axis)
            edge = [slice(None)] * instances.ndim
            edge[axis] = 0 if shift == 1 else -1
            neighbour[tuple(edge)] = 0  # no wrap-around: outside the image is background
            border |= (instances > 0) & (neighbour != instances)
    return border


def distance_target(instances: np.ndarray, spacing: tuple[float, ...] | None = None) -> np.ndarray:
    """``(*S)`` float32 in [0, 1] from an instance map ``(*S)`` (0 background, one id per object): 1 at each
    object's innermost voxel, 0 on its border and outside; ``spacing`` (mm per axis) for anisotropic grids."""
    instances = np.asarray(instances)
    inside = (instances > 0) & ~object_borders(instances)
    distance = ndimage.distance_transform_edt(inside, sampling=spacing).astype(np.float32)
    ids = np.unique(instances[instances > 0])
    if ids.size == 0:
        return np.zeros(instances.shape, np.float32)
    peaks = np.asarray(ndimage.maximum(distance, instances, ids), dtype=np.float32)
    lookup = np.ones(int(ids.max()) + 1, np.float32)  # background (id 0) divides by 1
    lookup[ids] = np.where(peaks > 0, peaks, 1.0)
    return np.where(instances > 0, distance / lookup[instances], 0.0).astype(np.float32)


def instances_from_distance(foreground: np.ndarray, distance: np.ndarray, *,
                            marker_threshold: float = MARKER_THRESHOLD) -> np.ndarray:
    """Instance map ``(*S)`` (0 background, objects 1..n; uint16, or uint32 past 65535 objects) of a foreground
    mask and a distance map, both ``(*S)``: a marker watershed (scikit-image) of ``-distance`` inside the
    foreground."""
    from skimage.segmentation import watershed

    foreground = np.asarray(foreground, dtype=bool)
    distance = np.asarray(distance, dtype=np.float32)
    if foreground.shape != distance.shape:
        raise ValueError(f"foreground {foreground.shape} and distance {distance.shape} differ in shape")
    structure = ndimage.generate_binary_structure(foreground.ndim, 1)
    markers, count = ndimage.label(foreground & (distance > marker_threshold), structure)
    grown = watershed(-distance, markers, mask=foreground) if count else np.zeros(foreground.shape, np.int64)
    rest, _ = ndimage.label(foreground & (grown == 0), structure)  # parts no marker reached
    grown = np.where(rest > 0, rest + count, grown)
    return grown.astype(np.uint16 if grown.max() <= np.iinfo(np.uint16).max else np.uint32)
