"""A 2D mask as closed polygons and back: what an RTSTRUCT stores per ROI and slice.

Polygons are the 0.5 iso-line of the mask (marching squares): their vertices lie half-way between pixel centres,
so no pixel centre is ever on an edge and filling them (pixel centres inside) gives the mask back exactly. A hole
is joined to the polygon around it by a zero-width cut along a half-pixel line (the "keyhole" of DICOM PS3.3
C.8.8.6.3), so each piece of the mask is one polygon, filled alike by readers that OR a ROI's contours and by
readers that XOR them; an island inside a hole is a polygon of its own.
"""

from __future__ import annotations

import numpy as np


def mask_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Closed polygons ``(N, 2)`` in (row, column) pixel coordinates whose filled union is the 2D boolean mask
    ``(Y, X)``: one per connected piece, its holes keyholed in (the first point is not repeated at the end)."""
    from skimage.measure import find_contours, points_in_poly

    padded = np.pad(mask.astype(np.float32), 1)  # a mask touching the border still gets closed contours
    rings = [_corners(c[:-1]) - 1.0 for c in find_contours(padded, 0.5) if len(c) > 3]
    if not rings:
        return []
    areas = np.array([_signed_area(r) for r in rings])
    outer_sign = np.sign(areas[np.argmax(np.abs(areas))])  # the largest ring bounds a piece, never a hole
    outers = [i for i in range(len(rings)) if np.sign(areas[i]) == outer_sign]
    holes: dict[int, list[np.ndarray]] = {i: [] for i in outers}
    for i in range(len(rings)):
        if np.sign(areas[i]) != outer_sign:  # a hole's parent: the smallest piece boundary around it
            around = [j for j in outers if points_in_poly(rings[i][:1], rings[j])[0]]
            holes[min(around, key=lambda j: abs(areas[j]))].append(rings[i])
    return [_keyhole(rings[i], holes[i]) for i in outers]


def fill_polygons(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """The ``shape`` boolean mask of pixel centres inside an odd number of ``polygons`` ((row, column) vertices)."""
    from skimage.draw import polygon

    mask = np.zeros(shape, dtype=bool)
    for points in polygons:
        rows, columns = polygon(points[:, 0], points[:, 1], shape)
        mask[rows, columns] ^= True
    return mask


def _corners(points: np.ndarray) -> np.ndarray:
    """The vertices of a closed polygon ``(N, 2)`` that are not on a straight run between their neighbours (most
    of marching squares' vertices are): the same polygon, fewer points."""
    before, after = points - np.roll(points, 1, axis=0), np.roll(points, -1, axis=0) - points
    turn = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    return points[np.abs(turn) > 1e-9]


def _signed_area(points: np.ndarray) -> float:
    r, c = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(r, np.roll(c, -1)) - np.dot(c, np.roll(r, -1)))


def _keyhole(outer: np.ndarray, holes: list[np.ndarray]) -> np.ndarray:
    """``outer`` with each of ``holes`` cut in: from the hole's top-right vertex, whose column is a half-pixel
    line, straight up (decreasing row) to the nearest edge of the polygon so far, and back. Holes are taken
    right to left (top first among equals), so the cut of a hole never crosses a hole not yet cut in."""
    polygon = outer
    for hole in sorted(holes, key=lambda h: (-h[:, 1].max(), h[h[:, 1] == h[:, 1].max(), 0].min())):
        column = hole[:, 1].max()
        start = int(np.flatnonzero(hole[:, 1] == column)[np.argmin(hole[hole[:, 1] == column, 0])])
        row = hole[start, 0]
        index, hit = _nearest_edge_above(polygon, row, column)
        bridge = np.array([hit, *np.roll(hole, -start, axis=0), hole[start], hit])
        polygon = np.concatenate([polygon[:index + 1], bridge, polygon[index + 1:]])
    return polygon


def _nearest_edge_above(polygon: np.ndarray, row: float, column: float) -> tuple[int, np.ndarray]:
    """The edge ``polygon[i] -> polygon[i + 1]`` that the ray from (row, column) towards row 0 meets first, and
    the point where it meets it (an edge along the ray is met at its lower end)."""
    a, b = polygon, np.roll(polygon, -1, axis=0)
    best, best_row = -1, -np.inf
    for i in range(len(polygon)):
        (r0, c0), (r1, c1) = a[i], b[i]
        if c0 == c1 == column:
            meet = max(r0, r1)
        elif min(c0, c1) <= column <= max(c0, c1) and c0 != c1:
            meet = r0 + (r1 - r0) * (column - c0) / (c1 - c0)
        else:
            continue
        if best_row < meet < row:
            best, best_row = i, meet
    if best < 0:
        raise ValueError("a hole outside its polygon")  # cannot happen for marching-squares rings
    return best, np.array([best_row, column])
