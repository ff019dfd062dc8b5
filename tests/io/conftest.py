"""A BraTS-derived DICOM series for the DICOM output tests: a 24 x 64 x 64 crop around the tumour of one case,
written with pydicom (MR Image Storage, one file per slice, shuffled file names) on an oblique, anisotropic grid
so that a slice-order or axis mix-up cannot go unnoticed, and its label map on the grid the series reads back as."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from medseg.io import Image, read_image

BRATS_NAMES = {1: "necrosis", 2: "edema", 3: "non_enhancing", 4: "enhancing"}


@dataclass
class DicomCase:
    folder: Path  # the series, one .dcm per slice
    image: Image  # the series as read_image reads it (1, 24, 64, 64)
    labels: Image  # the BraTS label crop on that grid (1, 24, 64, 64), values 0..4
    names: dict[int, str]

    def headers(self):
        """The slices' pydicom datasets (headers only), in file-name order (not slice order)."""
        import pydicom

        return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(self.folder.iterdir())]


def oblique_direction(degrees: float = 25.0) -> np.ndarray:
    """Direction cosines rotated about z then about x: no axis is a patient axis."""
    a, b = np.radians(degrees), np.radians(degrees / 2)
    about_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return about_x @ about_z


@pytest.fixture(scope="session")
def brats_dicom(tmp_path_factory) -> DicomCase:
    from tests.conftest import shared_dataset

    from medseg.io.dicom_write import write_dicom_series

    root = shared_dataset("brats2013_mini")
    flair = read_image(root / "imagesTr" / "brats_pat0003_0000.nii.gz").array[0]
    label = read_image(root / "labelsTr" / "brats_pat0003.nii.gz").array[0]
    z, y, x = np.argwhere(label > 0).mean(axis=0).astype(int)
    box = (slice(z - 12, z + 12), slice(y - 32, y + 32), slice(x - 32, x + 32))
    crop = Image.from_array(np.ascontiguousarray(flair[box]), spacing=(2.0, 0.9, 1.1),
                            origin=(-40.0, 25.0, 130.0), direction=oblique_direction())
    folder = tmp_path_factory.mktemp("brats_dicom") / "series"
    order = [int(i) for i in np.random.default_rng(0).permutation(24)]
    write_dicom_series(crop, folder, patient_id="brats_pat0003", series_description="FLAIR crop", file_order=order)
    image = read_image(folder)
    labels = image.with_array(np.ascontiguousarray(label[box])[None].astype(np.uint8))
    assert set(np.unique(labels.array)) == {0, 1, 2, 3, 4}
    return DicomCase(folder, image, labels, dict(BRATS_NAMES))


def run_dciodvfy(path: Path) -> list[str]:
    """The error lines of dciodvfy (dicom3tools, the DICOM standard's IOD checker) for ``path``."""
    import subprocess

    program = peer_program("dciodvfy", "install dicom3tools (scripts/install_system_packages.sh does)")
    result = subprocess.run([program, str(path)], capture_output=True, text=True)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture
def dciodvfy():
    return run_dciodvfy


def peer_program(name: str, how: str) -> str:
    """The path of a peer tool the DICOM output tests cross-check against; fails (not skips) when it is missing."""
    import sys

    program = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    assert program, f"{name} not found: {how}"
    return program
