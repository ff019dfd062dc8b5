"""The one in-memory image type: a channel-first array plus the geometry that places it in the world."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Image:
    """An image or label map with its geometry.

    Attributes:
        array: ``(C, *spatial)`` with spatial axes in SimpleITK's array order, ``(Z, Y, X)`` or ``(Y, X)``.
            Always channel-first, also for one channel (``C == 1``): label maps are ``(1, Z, Y, X)``.
        spacing: voxel size in mm, in the array's spatial order ``(z, y, x)`` / ``(y, x)``.
        origin: world position (mm, ITK/LPS frame) of the first voxel, in ITK's physical order ``(x, y, z)``.
        direction: ``(D, D)`` direction cosines as ITK stores them (column ``j`` is the world direction of ITK index
            axis ``j``, i.e. of array axis ``D-1-j``).
        metadata: free-form key/value pairs kept from the file (header fields, DICOM tags); not geometry.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = np.asarray(self.direction, dtype=np.float64)
        d = len(self.spacing)
        if self.array.ndim != d + 1:
            raise ValueError(f"array of shape {self.array.shape} needs {d} spatial axes plus one channel axis")
        if len(self.origin) != d or self.direction.shape != (d, d):
            raise ValueError(f"origin {self.origin} / direction {self.direction.shape} do not match {d} spatial axes")

    @classmethod
    def from_array(
        cls,
        array: np.ndarray,
        spacing: tuple[float, ...] | None = None,
        origin: tuple[float, ...] | None = None,
        direction: np.ndarray | None = None,
        *,
        channel_axis: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> "Image":
        """Wrap a numpy array; ``channel_axis=False`` means ``array`` is purely spatial and gets ``C = 1``."""
        array = np.asarray(array)
        if not channel_axis:
            array = array[None]
        d = array.ndim - 1
        return cls(
            array=array,
            spacing=tuple(spacing) if spacing is not None else (1.0,) * d,
            origin=tuple(origin) if origin is not None else (0.0,) * d,
            direction=np.eye(d) if direction is None else np.asarray(direction),
            metadata=dict(metadata or {}),
        )

    @property
    def num_channels(self) -> int:
        return int(self.array.shape[0])

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape[1:])

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return len(self.spacing)

    def channel(self, index: int = 0) -> np.ndarray:
        """The spatial array ``(*spatial)`` of one channel (a view)."""
        return self.array[index]

    def with_array(self, array: np.ndarray) -> "Image":
        """Same geometry and metadata, new ``(C, *spatial)`` array (e.g. a prediction for this image)."""
        if tuple(array.shape[1:]) != self.spatial_shape:
            raise ValueError(f"new array {array.shape} does not have spatial shape {self.spatial_shape}")
        return Image(array, self.spacing, self.origin, self.direction.copy(), dict(self.metadata))

    def same_grid(self, other: "Image", tolerance: float = 1e-4) -> bool:
        """True when both images sample the same world grid (shape, spacing, origin, direction within tolerance)."""
        return not grid_differences(self, other, tolerance)


def grid_differences(a: Image, b: Image, tolerance: float = 1e-4) -> list[str]:
    """Describe each way the grids of ``a`` and ``b`` differ; empty when they match within ``tolerance``.

    Spacing and origin compare relatively to the spacing (a tolerance of 1e-4 allows 0.01 % of a voxel);
    direction cosines compare absolutely.
    """
    problems = []
    if a.spatial_shape != b.spatial_shape:
        return [f"shape {b.spatial_shape} != {a.spatial_shape}"]
    sa, sb = np.array(a.spacing), np.array(b.spacing)
    if not np.allclose(sa, sb, rtol=tolerance, atol=0):
        problems.append(f"spacing {_fmt(sb)} != {_fmt(sa)}")
    voxel = float(np.max(sa))
    if not np.allclose(a.origin, b.origin, rtol=0, atol=tolerance * max(voxel, 1.0) * 10):
        problems.append(f"origin {_fmt(b.origin)} != {_fmt(a.origin)}")
    if not np.allclose(a.direction, b.direction, rtol=0, atol=tolerance * 10):
        problems.append("direction differs")
    return problems


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"
