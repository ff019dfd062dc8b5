"""A DICOM series written slice by slice (shuffled file names, rescaled pixels) reads back as the volume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.errors import MedsegError
from medseg.io import read_image

pydicom = pytest.importorskip("pydicom")


def _write_series(folder: Path, volume: np.ndarray, *, spacing, origin, slope: float, intercept: float,
                  series_uid: str, order: list[int]) -> None:
    """Write ``volume`` (Z, Y, X) of stored integers as one CT slice per file, files named in ``order``."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    study_uid = generate_uid()
    for file_index, z in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "CT"
        ds.PatientID = "medseg-test"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.InstanceNumber = file_index + 1  # deliberately not the slice order
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + z * spacing[0]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = spacing[0]
        ds.Rows, ds.Columns = volume.shape[1:]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.PixelData = volume[z].astype(np.int16).tobytes()
        ds.save_as(folder / f"IM{file_index:04d}.dcm", enforce_file_format=True)


def test_dicom_series_sorted_by_position_and_rescaled(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stored = rng.integers(-500, 1500, size=(6, 10, 12)).astype(np.int16)
    order = [3, 0, 5, 1, 4, 2]  # file names do not follow the slice positions
    spacing, origin = (2.5, 0.75, 0.6), (-100.0, 20.0, 33.0)
    _write_series(tmp_path, stored, spacing=spacing, origin=origin, slope=2.0, intercept=-1024.0,
                  series_uid="1.2.826.0.1.3680043.8.498.1", order=order)
    image = read_image(tmp_path)
    assert image.spatial_shape == (6, 10, 12)
    np.testing.assert_allclose(image.array[0], stored * 2.0 - 1024.0)
    assert image.spacing == pytest.approx(spacing)
    assert image.origin == pytest.approx(origin)
    np.testing.assert_allclose(image.direction, np.eye(3))
    assert image.metadata["Modality"] == "CT" and image.metadata["files"] == 6


def test_two_series_in_one_folder_is_a_clear_error(tmp_path: Path) -> None:
    stored = np.zeros((2, 4, 4), dtype=np.int16)
    for uid in ("1.2.826.0.1.3680043.8.498.2", "1.2.826.0.1.3680043.8.498.3"):
        sub = tmp_path / uid[-1]
        sub.mkdir()
        _write_series(sub, stored, spacing=(1, 1, 1), origin=(0, 0, 0), slope=1, intercept=0, series_uid=uid,
                      order=[0, 1])
        for f in sub.iterdir():
            f.rename(tmp_path / f"{uid[-1]}_{f.name}")
    with pytest.raises(MedsegError, match="2 DICOM series in one folder"):
        read_image(tmp_path)


def test_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MedsegError, match="no DICOM series found"):
        read_image(tmp_path)
