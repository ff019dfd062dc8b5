"""Surface distances computed once per (class, case), and every surface metric derived from them.

Work is confined to the bounding box of both masks padded by one background voxel (outside the image counts as
background), surfaces come from a cheap shifted-AND erosion (``"voxel"`` mode) or from the 2x2(x2) neighbourhood
code of DeepMind's surface-distance (``"surfel"`` mode), and the two distance transforms are ``edt``'s
multi-threaded anisotropic EDT. All distances are in mm, spacing in the array's axis order ``(z, y, x)``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from medseg.metrics import conventions as conv
from medseg.metrics._surfel_tables import NEIGHBOUR_CODE_TO_NORMALS

SURFACE_METRICS = ("hd", "hd95", "assd", "msd", "nsd")


@dataclass(frozen=True)
class SurfaceDistances:
    """Distances (mm) from each surface element of one mask to the other mask's surface, with element weights.

    ``pred_to_ref[i]`` is the distance of prediction surface element ``i`` to the reference surface, weighted by
    ``pred_weights[i]`` (1 per voxel in ``"voxel"`` mode; contour length in mm or surfel area in mm² in
    ``"surfel"`` mode). When one mask is empty the other side's distances are all ``inf``.
    """

    pred_to_ref: np.ndarray
    ref_to_pred: np.ndarray
    pred_weights: np.ndarray
    ref_weights: np.ndarray
    mode: str

    @property
    def pred_empty(self) -> bool:
        return self.pred_to_ref.size == 0

    @property
    def ref_empty(self) -> bool:
        return self.ref_to_pred.size == 0


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Smallest box of slices holding every non-zero voxel of ``mask``; None when it is empty.

    One full pass finds the range along the first axis; the other axes are searched in that slab only.
    """
    hits = np.flatnonzero(np.any(mask, axis=tuple(range(1, mask.ndim))))
    if hits.size == 0:
        return None
    box = [slice(int(hits[0]), int(hits[-1]) + 1)]
    slab = mask[box[0]]
    for axis in range(1, mask.ndim):
        hits = np.flatnonzero(np.any(slab, axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def union_box(*masks: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of the union of ``masks`` (each box found on its own: no union array is allocated)."""
    boxes = [b for b in (bounding_box(m) for m in masks) if b is not None]
    if not boxes:
        return None
    return tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(len(boxes[0])))


def _padded_crop(mask: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    """``mask[box]`` with one voxel of background on every side (so erosion treats the image edge as outside)."""
    return np.pad(np.asarray(mask[box], dtype=bool), 1)


def _shifted(array: np.ndarray, offset: tuple[int, ...]) -> np.ndarray:
    """View of the interior ``array[1:-1, ...]`` moved by ``offset`` (each -1, 0 or 1)."""
    return array[tuple(slice(1 + o, array.shape[a] - 1 + o) for a, o in enumerate(offset))]


def surface_voxels(padded: np.ndarray, connectivity: int = conv.DEFAULT_SURFACE_CONNECTIVITY) -> np.ndarray:
    """Foreground voxels with a background neighbour: ``mask & ~erosion(mask)`` on a zero-padded mask.

    ``connectivity`` 1 uses face neighbours (6 in 3D, 4 in 2D, scipy's default structure, as MONAI and medpy);
    ``ndim`` uses the full 3**ndim neighbourhood. The one-voxel padding stays background in the result.
    """
    ndim = padded.ndim
    if not 1 <= connectivity <= ndim:
        raise ValueError(f"connectivity must be in 1..{ndim}, got {connectivity}")
    interior = padded[(slice(1, -1),) * ndim].copy()
    if connectivity == ndim:  # the full box erodes separably, one axis at a time
        eroded = padded.copy()
        for axis in range(ndim):
            core = [slice(None)] * ndim
            core[axis] = slice(1, -1)
            lo, hi = list(core), list(core)
            lo[axis], hi[axis] = slice(0, -2), slice(2, None)
            eroded[tuple(core)] &= eroded[tuple(lo)] & eroded[tuple(hi)]
        interior &= eroded[(slice(1, -1),) * ndim]
    else:
        for offset in np.ndindex(*(3,) * ndim):
            shift = tuple(o - 1 for o in offset)
            if 0 < sum(abs(s) for s in shift) <= connectivity:
                interior &= _shifted(padded, shift)
    surface = padded.copy()
    surface[(slice(1, -1),) * ndim] &= ~interior
    return surface


def _neighbour_codes(padded: np.ndarray) -> np.ndarray:
    """DeepMind's 2x2(x2) neighbourhood code on the voxel-corner grid: shape ``padded.shape - 1``, dtype uint8.

    Corner ``i`` sees voxels ``i-1`` and ``i`` of the unpadded crop along each axis; the first voxel of the
    neighbourhood carries the highest bit (kernel ``[[8, 4], [2, 1]]`` in 2D, ``128 ... 1`` in 3D).
    """
    ndim = padded.ndim
    codes = np.zeros(tuple(s - 1 for s in padded.shape), dtype=np.uint8)
    for bit, offset in enumerate(reversed(list(np.ndindex(*(2,) * ndim)))):
        view = padded[tuple(slice(o, padded.shape[a] - 1 + o) for a, o in enumerate(offset))]
        codes |= view.view(np.uint8) << bit
    return codes


@functools.lru_cache(maxsize=64)
def surfel_area_table(spacing: tuple[float, ...]) -> np.ndarray:
    """Length (2D, mm) or area (3D, mm²) of the surface element of each neighbourhood code (DeepMind's tables)."""
    if len(spacing) == 3:
        table = np.zeros(256)
        s0, s1, s2 = spacing
        for code, normals in enumerate(NEIGHBOUR_CODE_TO_NORMALS):
            n = np.asarray(normals) * np.array([s1 * s2, s0 * s2, s0 * s1])
            table[code] = float(np.sum(np.linalg.norm(n, axis=1)))
        return table
    vertical, horizontal = spacing
    diag = 0.5 * math.hypot(vertical, horizontal)
    table = np.full(16, diag)
    table[[0b0000, 0b1111]] = 0.0
    table[[0b0011, 0b1100]] = horizontal
    table[[0b0101, 0b1010]] = vertical
    table[[0b0110, 0b1001]] = 2 * diag
    return table


def _distance_map(surface: np.ndarray, spacing: tuple[float, ...], threads: int) -> np.ndarray:
    import edt

    # uint8 input is faster than bool in edt; the view costs nothing
    return edt.edt((~surface).view(np.uint8), anisotropy=spacing, black_border=False, parallel=threads)


def surface_distances(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: tuple[float, ...] | None = None,
    *,
    mode: str = conv.DEFAULT_SURFACE_MODE,
    connectivity: int = conv.DEFAULT_SURFACE_CONNECTIVITY,
    threads: int = 1,
) -> SurfaceDistances:
    """Distances between the surfaces of two boolean masks ``(*spatial)`` (2D or 3D), in mm.

    ``mode="voxel"``: surface voxels by erosion with ``connectivity``, distances between voxel centres.
    ``mode="surfel"``: DeepMind's corner-grid surfels weighted by length/area (``connectivity`` is unused).
    Exactly two distance transforms are computed, on the padded bounding box of both masks.
    """
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    spacing = tuple(float(s) for s in (spacing if spacing is not None else (1.0,) * pred.ndim))
    if len(spacing) != pred.ndim or pred.ndim not in (2, 3):
        raise ValueError(f"need 2D or 3D masks with one spacing per axis, got {pred.shape} and {spacing}")
    if mode not in ("voxel", "surfel"):
        raise ValueError(f"surface mode must be 'voxel' or 'surfel', got {mode!r}")
    empty = np.zeros(0)
    box = union_box(pred, ref)
    if box is None:
        return SurfaceDistances(empty, empty, empty, empty, mode)
    p, r = _padded_crop(pred, box), _padded_crop(ref, box)
    if mode == "voxel":
        p_surface, r_surface = surface_voxels(p, connectivity), surface_voxels(r, connectivity)
        p_weights = np.ones(int(np.count_nonzero(p_surface)))
        r_weights = np.ones(int(np.count_nonzero(r_surface)))
    else:
        table = surfel_area_table(spacing)
        p_code, r_code = _neighbour_codes(p), _neighbour_codes(r)
        full = np.uint8(2 ** (2**pred.ndim) - 1)
        p_surface = (p_code != 0) & (p_code != full)
        r_surface = (r_code != 0) & (r_code != full)
        p_weights, r_weights = table[p_code[p_surface]], table[r_code[r_surface]]
    pred_to_ref = _directed(p_surface, r_surface, spacing, threads)
    ref_to_pred = _directed(r_surface, p_surface, spacing, threads)
    return SurfaceDistances(pred_to_ref, ref_to_pred, p_weights, r_weights, mode)


def _directed(source: np.ndarray, target: np.ndarray, spacing: tuple[float, ...], threads: int) -> np.ndarray:
    """Distance (float64, mm) from each ``source`` surface element to the nearest ``target`` element."""
    n_source = int(np.count_nonzero(source))
    if n_source == 0:
        return np.zeros(0)
    if not target.any():
        return np.full(n_source, np.inf)
    return _distance_map(target, spacing, threads)[source].astype(np.float64)


# --- metrics from SurfaceDistances -----------------------------------------------------------------------------------


def _conventional(key: str, sd: SurfaceDistances) -> float | None:
    value = conv.empty_value(key, sd.pred_empty, sd.ref_empty)
    return None if value is None else float(value)


def _percentile(distances: np.ndarray, weights: np.ndarray, percentile: float, mode: str) -> float:
    """Voxel mode: linear interpolation (numpy); surfel mode: first distance whose area fraction reaches q."""
    if mode == "voxel":
        return float(np.percentile(distances, percentile))
    order = np.argsort(distances, kind="stable")
    cumulative = np.cumsum(weights[order])
    index = int(np.searchsorted(cumulative / cumulative[-1], percentile / 100.0))
    return float(distances[order[min(index, distances.size - 1)]])


def hausdorff(sd: SurfaceDistances) -> float:
    """Maximum of both directed maximum distances (mm)."""
    value = _conventional("hd", sd)
    return value if value is not None else float(max(sd.pred_to_ref.max(), sd.ref_to_pred.max()))


def hausdorff_percentile(sd: SurfaceDistances, percentile: float = conv.DEFAULT_PERCENTILE,
                         definition: str = conv.DEFAULT_HD95_DEFINITION) -> float:
    """Robust Hausdorff distance (mm); ``definition`` is ``"max"``/``"mean"`` of the two directed percentiles or
    ``"pooled"`` (the percentile of both directed distance sets together)."""
    value = _conventional("hd95", sd)
    if value is not None:
        return value
    if definition == "pooled":
        distances = np.concatenate([sd.pred_to_ref, sd.ref_to_pred])
        weights = np.concatenate([sd.pred_weights, sd.ref_weights])
        return _percentile(distances, weights, percentile, sd.mode)
    directed = (_percentile(sd.pred_to_ref, sd.pred_weights, percentile, sd.mode),
                _percentile(sd.ref_to_pred, sd.ref_weights, percentile, sd.mode))
    if definition == "max":
        return max(directed)
    if definition == "mean":
        return 0.5 * (directed[0] + directed[1])
    raise ValueError(f"HD95 definition must be one of {conv.HD95_DEFINITIONS}, got {definition!r}")


def directed_means(sd: SurfaceDistances) -> tuple[float, float]:
    """Weighted mean distance prediction->reference and reference->prediction (mm)."""
    return (float(np.average(sd.pred_to_ref, weights=sd.pred_weights)),
            float(np.average(sd.ref_to_pred, weights=sd.ref_weights)))


def assd(sd: SurfaceDistances) -> float:
    """Average symmetric surface distance: the mean of both directed distance sets pooled (mm)."""
    value = _conventional("assd", sd)
    if value is not None:
        return value
    total = np.dot(sd.pred_to_ref, sd.pred_weights) + np.dot(sd.ref_to_pred, sd.ref_weights)
    return float(total / (sd.pred_weights.sum() + sd.ref_weights.sum()))


def msd(sd: SurfaceDistances) -> float:
    """Mean surface distance: the mean of the two directed mean distances (mm)."""
    value = _conventional("msd", sd)
    return value if value is not None else 0.5 * sum(directed_means(sd))


def nsd(sd: SurfaceDistances, tolerance: float = conv.DEFAULT_NSD_TOLERANCE_MM) -> float:
    """Normalised surface distance (surface Dice) at ``tolerance`` mm: weighted fraction of surface within tau."""
    value = _conventional("nsd", sd)
    if value is not None:
        return value
    limit = tolerance * (1.0 + conv.DISTANCE_TIE_SLACK)
    inside = sd.pred_weights[sd.pred_to_ref <= limit].sum() + sd.ref_weights[sd.ref_to_pred <= limit].sum()
    return float(inside / (sd.pred_weights.sum() + sd.ref_weights.sum()))


def surface_metrics(sd: SurfaceDistances, keys=SURFACE_METRICS, *, percentile: float = conv.DEFAULT_PERCENTILE,
                    hd95_definition: str = conv.DEFAULT_HD95_DEFINITION,
                    nsd_tolerance: float = conv.DEFAULT_NSD_TOLERANCE_MM) -> dict[str, float]:
    """The requested surface metrics, all from the one ``SurfaceDistances``."""
    functions = {
        "hd": lambda: hausdorff(sd),
        "hd95": lambda: hausdorff_percentile(sd, percentile, hd95_definition),
        "assd": lambda: assd(sd),
        "msd": lambda: msd(sd),
        "nsd": lambda: nsd(sd, nsd_tolerance),
    }
    return {key: functions[key]() for key in keys}


def boundary_iou(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...] | None = None, *,
                 width: float = conv.DEFAULT_BOUNDARY_WIDTH_MM, threads: int = 1) -> float:
    """Boundary IoU (Cheng et al. 2021): IoU of the parts of both masks within ``width`` mm of their own contour.

    A voxel is in the band when its Euclidean distance (voxel centre to the nearest background voxel centre,
    outside the image counting as background) is <= ``width``.
    """
    import edt

    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    value = conv.empty_value("boundary_iou", not pred.any(), not ref.any())
    if value is not None:
        return float(value)
    spacing = tuple(float(s) for s in (spacing if spacing is not None else (1.0,) * pred.ndim))
    box = union_box(pred, ref)
    limit = width * (1.0 + conv.DISTANCE_TIE_SLACK)
    p, r = _padded_crop(pred, box), _padded_crop(ref, box)
    p_band = p & (edt.edt(p, anisotropy=spacing, parallel=threads) <= limit)
    r_band = r & (edt.edt(r, anisotropy=spacing, parallel=threads) <= limit)
    union = np.count_nonzero(p_band | r_band)
    return float(np.count_nonzero(p_band & r_band) / union)
