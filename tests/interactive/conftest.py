"""A small 3D scan for the propagation tests: a bright ellipsoid in noise, written as NIfTI with its geometry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from medseg.io import Image, write_image


@dataclass
class EllipsoidScan:
    """``path`` to the NIfTI, the ``image`` written there and the ``truth`` ``(Z, Y, X)`` bool ellipsoid.
    The ellipsoid spans slices ``first..last`` and is widest on ``middle``, centred at ``centre`` (row, col)."""

    path: Path
    image: Image
    truth: np.ndarray
    middle: int = 10
    centre: tuple[float, float] = (19.0, 23.0)
    first: int = 4
    last: int = 16


@pytest.fixture
def ellipsoid_scan(tmp_path) -> EllipsoidScan:
    """20 slices of 40 x 44, object 100 and background 20 with noise of sd 15, anisotropic spacing, a shifted origin
    and a flipped direction."""
    shape, centre, radii = (20, 40, 44), (10, 19, 23), (6.9, 12, 14)
    axes = np.indices(shape)
    truth = sum(((axis - c) / r) ** 2 for axis, c, r in zip(axes, centre, radii)) <= 1
    noise = np.random.default_rng(0).normal(0, 15, shape)
    image = Image.from_array((np.where(truth, 100.0, 20.0) + noise).astype(np.float32), spacing=(3.0, 0.8, 0.7),
                             origin=(-10.0, 5.0, 2.5), direction=np.diag([1.0, -1.0, 1.0]))
    path = write_image(image, tmp_path / "ellipsoid.nii.gz")
    return EllipsoidScan(path, image, truth)
