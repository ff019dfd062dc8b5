"""The source series of a DICOM output (SEG, RTSTRUCT): its slice headers in ``Image`` array order and its grid.

``read_dicom_series`` gives the pixels; the writers of derived objects also need each slice's UIDs, so the same
files are read again with pydicom (headers only) and sorted the way GDCM sorts them: by position along the slice
normal, ascending. Slice ``k`` of the returned list is array index ``z = k`` of the ``Image``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from medseg.errors import MedsegError
from medseg.io.dicom import series_files
from medseg.io.image import Image, grid_differences


def read_series_headers(folder: str | Path, series_uid: str | None = None) -> list:
    """The ``pydicom.Dataset`` headers (no pixel data) of the one series in ``folder`` (or ``series_uid``),
    sorted as ``sort_slices`` sorts them; the files are the ones ``read_dicom_series`` reads."""
    import pydicom

    folder = Path(folder)
    files = series_files(folder, series_uid)
    return sort_slices([pydicom.dcmread(f, stop_before_pixels=True) for f in files], folder)


def slice_normal(dataset) -> np.ndarray:
    """The unit normal ``row x column`` of a slice's ImageOrientationPatient (LPS, no unit)."""
    orientation = np.asarray(dataset.ImageOrientationPatient, dtype=np.float64)
    return np.cross(orientation[:3], orientation[3:])


def sort_slices(datasets: Sequence, where: str | Path | None = None) -> list:
    """``datasets`` (single-frame slices of one series, any order) sorted by position along the slice normal,
    ascending (GDCM's order, so index ``k`` is ``Image`` array ``z = k``). ``MedsegError`` for slices without
    geometry, of another series, or of another orientation."""
    datasets = list(datasets)
    if not datasets:
        raise MedsegError("no source slices given", path=where, fix="pass the datasets of the source series")
    for dataset in datasets:
        missing = [k for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows",
                               "Columns", "SOPInstanceUID") if k not in dataset]
        if missing:
            raise MedsegError(f"source slice {dataset.get('SOPInstanceUID', '?')} has no {', '.join(missing)}",
                              path=where, fix="use an image series with patient geometry (CT, MR, PET ...)")
    series = {str(d.get("SeriesInstanceUID", "")) for d in datasets}
    if len(series) > 1:
        raise MedsegError(f"the source slices belong to {len(series)} series", path=where,
                          fix="pass the slices of one series")
    first = np.asarray(datasets[0].ImageOrientationPatient, dtype=np.float64)
    if any(not np.allclose(np.asarray(d.ImageOrientationPatient, dtype=np.float64), first, atol=1e-4)
           for d in datasets):
        raise MedsegError("the source slices have different orientations", path=where,
                          fix="pass one series of parallel slices")
    normal = slice_normal(datasets[0])
    return sorted(datasets, key=lambda d: float(np.dot(normal, np.asarray(d.ImagePositionPatient, float))))


def series_grid(datasets: Sequence, where: str | Path | None = None) -> Image:
    """An ``Image`` ``(1, Z, Y, X)`` of zeros (a read-only broadcast view, no memory) with the grid of ``datasets`` sorted as
    ``sort_slices`` sorts them: origin the first slice's position, direction columns the row cosine, the column
    cosine and the normal, z spacing the mean distance between neighbouring slices (mm)."""
    first = datasets[0]
    orientation = np.asarray(first.ImageOrientationPatient, dtype=np.float64)
    normal = slice_normal(first)
    positions = np.array([np.dot(normal, np.asarray(d.ImagePositionPatient, float)) for d in datasets])
    gaps = np.diff(positions)
    dz = float(np.mean(gaps)) if len(gaps) else float(first.get("SliceThickness", 1.0) or 1.0)
    if len(gaps) and (dz <= 0 or np.ptp(gaps) > 1e-3 * max(dz, 1.0)):
        raise MedsegError(f"the source slices are not evenly spaced (gaps {gaps.min():.4g} to {gaps.max():.4g} mm)",
                          path=where, fix="pass a series of evenly spaced slices, one per position")
    dy, dx = (float(v) for v in first.PixelSpacing)  # PixelSpacing: between rows, then between columns
    direction = np.stack([orientation[:3], orientation[3:], normal], axis=1)
    shape = (len(datasets), int(first.Rows), int(first.Columns))
    return Image(np.broadcast_to(np.zeros((1, 1, 1, 1), np.uint8), (1, *shape)), (dz, dy, dx),
                 tuple(float(v) for v in first.ImagePositionPatient), direction)


def require_series_grid(labels: Image, datasets: Sequence, path: str | Path) -> None:
    """``MedsegError`` naming ``path`` when ``labels`` (``(1, Z, Y, X)``) is not on the grid of ``datasets``."""
    if labels.ndim != 3 or labels.num_channels != 1:
        raise MedsegError(f"a DICOM output needs a 3D label map (1, Z, Y, X), not {labels.array.shape}", path=path,
                          fix="predict a DICOM series with a model that returns one label map")
    problems = grid_differences(series_grid(datasets, path), labels, tolerance=1e-3)
    if problems:
        raise MedsegError(f"the labels are not on the source series' grid ({'; '.join(problems)})", path=path,
                          fix="write labels predicted for this very series (same slices, spacing and position)")


def foreground_labels(labels: Image, label_names: dict[int, str], path: str | Path) -> list[tuple[int, str]]:
    """``(value, name)`` of every non-zero label in ``label_names``, by value; ``MedsegError`` when ``labels``
    holds a value that has no name or is not a whole number >= 0."""
    named = {int(v): str(n) for v, n in label_names.items() if int(v) != 0}
    values = np.unique(labels.array)
    if values.size and (values.min() < 0 or not np.array_equal(values, np.round(values))):
        raise MedsegError(f"a label map holds whole numbers >= 0, this one {values[:5].tolist()}...", path=path,
                          fix="write the label map a model predicted, not probabilities or an image")
    present = {int(v) for v in values} - {0}
    unnamed = sorted(present - set(named))
    if unnamed:
        raise MedsegError(f"label value(s) {unnamed} have no name in the label names {named}", path=path,
                          fix="pass the label names of the model that predicted these labels")
    if not named:
        raise MedsegError("no foreground label to write", path=path, fix="pass label names with a non-zero label")
    return sorted(named.items())


def index_to_world(image: Image) -> np.ndarray:
    """4x4 map of array indices ``(z, y, x)`` to LPS world positions (mm)."""
    affine = np.eye(4)
    for axis in range(3):  # array axis 0 is ITK axis 2, whose world direction is direction column 2
        affine[:3, axis] = image.direction[:, 2 - axis] * image.spacing[axis]
    affine[:3, 3] = image.origin
    return affine


def single_series_files(folder: str | Path) -> list[str] | None:
    """The files of ``folder``'s one DICOM series when that series is all the folder holds (every visible file,
    two or more slices), else None: such a folder is one volume, not a folder of separate images."""
    from medseg.io.formats import image_suffix

    folder = Path(folder)
    visible = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if len(visible) < 2 or any(p.is_dir() for p in folder.iterdir()):
        return None
    if any(image_suffix(name) not in (None, ".dcm") for name in visible):  # NIfTI, PNG ...: not one series
        return None
    try:
        files = series_files(folder)
    except MedsegError:  # no series, or several
        return None
    return list(files) if sorted(Path(f).name for f in files) == visible else None


def software_version() -> str:
    """``"medseg <version>"`` for the SoftwareVersions of the DICOM objects medseg writes."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"medseg {version('medseg')}"
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "medseg"
