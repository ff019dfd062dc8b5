"""A small built-in 3D dataset: ellipsoid 'organs' with a 'lesion' in a noisy, bias-field-corrupted volume."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.atomic import atomic_folder
from medseg.config import DatasetSpec, write_json_atomic
from medseg.errors import MedsegError
from medseg.io import Image, write_image

SHAPE = (24, 64, 64)  # (z, y, x)
SPACING = (3.0, 1.0, 1.0)  # mm, anisotropic like a thick-slice MR


def shapes_case(rng: np.random.Generator, shape: tuple[int, int, int] = SHAPE,
                spacing: tuple[float, float, float] = SPACING) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic case: image ``(Z, Y, X)`` float32 and label ``(Z, Y, X)`` uint8 (0 bg, 1 organ, 2 lesion).

    The organ is a randomly placed and sized ellipsoid (in mm, so anisotropy is physical); the lesion a smaller
    ellipsoid inside it. Intensities differ per class, then a smooth multiplicative bias field and Gaussian
    noise are applied, so that a model must learn shape and context, not a threshold alone.
    """
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    extent = np.array([n * s for n, s in zip(shape, spacing)])
    center = extent * rng.uniform(0.35, 0.65, size=3)
    radii = extent * rng.uniform(0.18, 0.3, size=3)
    organ = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, center, radii)) <= 1.0
    lesion_center = center + radii * rng.uniform(-0.3, 0.3, size=3)
    lesion_radii = radii * rng.uniform(0.35, 0.5, size=3)
    lesion = (sum(((g - c) / r) ** 2 for g, c, r in zip(grids, lesion_center, lesion_radii)) <= 1.0) & organ
    label = np.zeros(shape, dtype=np.uint8)
    label[organ] = 1
    label[lesion] = 2
    image = np.full(shape, 100.0) + rng.normal(0, 3, size=shape)
    image[organ] = 160.0
    image[lesion] = 215.0 + rng.uniform(-10, 10)
    bias = 1.0 + 0.15 * sum(np.sin(g / e * np.pi * rng.uniform(0.5, 1.5) + rng.uniform(0, np.pi))
                            for g, e in zip(grids, extent)) / 3
    image = image * bias + rng.normal(0, 12, size=shape)
    return image.astype(np.float32), label


def write_shapes_dataset(destination: str | Path, *, num_cases: int = 8, num_test: int = 0, seed: int = 0) -> Path:
    """Write the example dataset in the nnU-Net v2 raw layout; the folder appears only when complete.

    ``num_test`` extra cases go to ``imagesTs/`` with their labels in ``labelsTs/`` (held out for evaluation).
    """
    destination = Path(destination)
    if destination.exists():
        raise MedsegError("destination exists", path=destination, fix="choose a new folder or delete it")
    if num_cases < 1:
        raise MedsegError(f"num_cases must be at least 1, got {num_cases}", fix="pass --cases 1 or more")
    rng = np.random.default_rng(seed)
    with atomic_folder(destination) as partial:
        for index in range(num_cases + num_test):
            image, label = shapes_case(rng)
            origin = tuple(float(v) for v in rng.uniform(-50, 50, size=3))
            case_id = f"shapes_{index:03d}"
            geometry = dict(spacing=SPACING, origin=origin)
            images, labels = ("imagesTr", "labelsTr") if index < num_cases else ("imagesTs", "labelsTs")
            write_image(Image.from_array(image, **geometry), partial / images / f"{case_id}_0000.nii.gz")
            write_image(Image.from_array(label, **geometry), partial / labels / f"{case_id}.nii.gz")
        spec = DatasetSpec(
            name="medseg_shapes", channel_names=["MR"], labels={"background": 0, "organ": 1, "lesion": 2},
            file_ending=".nii.gz", num_training=num_cases,
            description="Synthetic ellipsoid organ with a lesion, 3 mm slices, bias field and noise (medseg built-in).",
            licence="CC0 (generated)",
        )
        write_json_atomic(spec.to_nnunet_json(), partial / "dataset.json")
    return destination
