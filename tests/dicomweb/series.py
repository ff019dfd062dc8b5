"""Test data of the DICOMweb tests: a BraTS FLAIR crop written with pydicom as an MR series (one instance per
slice, real patient geometry), uploaded to Orthanc through its REST API (not medseg's DICOMweb code)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

BRATS_FLAIR = (Path(__file__).resolve().parents[2].parent / "shared" / "data" / "brats2013_mini" / "imagesTr"
               / "brats_pat0003_0000.nii.gz")


def brats_crop(slices: int = 16, size: int = 48) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """``(volume (Z, Y, X) float32, spacing (z, y, x) mm, origin (x, y, z) mm)`` of a crop through the tumour of
    one BraTS FLAIR (z-scored values)."""
    import SimpleITK as sitk

    if not BRATS_FLAIR.is_file():
        pytest.skip(f"real-data battery not found at {BRATS_FLAIR}")
    image = sitk.ReadImage(str(BRATS_FLAIR))
    z0, y0, x0 = 92 - slices // 2, 158 - size // 2, 96 - size // 2
    array = sitk.GetArrayFromImage(image)[z0:z0 + slices, y0:y0 + size, x0:x0 + size]
    origin = image.TransformIndexToPhysicalPoint((x0, y0, z0))
    return array.astype(np.float32), tuple(reversed(image.GetSpacing())), tuple(origin)


def write_mr_series(folder: Path, volume: np.ndarray, spacing: tuple[float, ...], origin: tuple[float, ...], *,
                    study_uid: str, series_uid: str, description: str = "FLAIR",
                    patient_id: str = "MEDSEG-TEST") -> list[Path]:
    """One MR Image Storage file per slice of ``volume (Z, Y, X)`` (axial, LPS, values stored as int16 with
    RescaleSlope 0.001) in ``folder``; returns the files."""
    from pydicom.dataset import FileMetaDataset, Dataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    frame_uid = generate_uid()
    files = []
    for k, plane in enumerate(volume):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = patient_id, "Test^Medseg", "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.SeriesNumber, ds.SeriesDescription, ds.InstanceNumber = "MR", 1, description, k + 1
        ds.Manufacturer = "medseg tests"
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[0]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = spacing[0]
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 0.001, 0, "US"
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
        ds.PixelData = np.round(plane * 1000).astype("<i2").tobytes()
        path = folder / f"slice_{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def upload(orthanc, files: list[Path]) -> None:
    """POST each file to Orthanc's REST ``/instances``."""
    with orthanc.rest() as client:
        for path in files:
            response = client.post("/instances", content=path.read_bytes())
            assert response.status_code == 200, response.text


def credentials(orthanc, tmp_path: Path) -> list[str]:
    secret = tmp_path / "password.txt"
    secret.write_text(orthanc.password + "\n")
    return ["--username", orthanc.username, "--password-file", str(secret)]


def segmentations(orthanc, study_uid: str) -> list[pydicom.Dataset]:
    """The SEG instances of a study, found with QIDO-RS and retrieved with WADO-RS (dicomweb-client directly)."""
    from dicomweb_client.api import DICOMwebClient
    from dicomweb_client.session_utils import create_session_from_user_pass

    client = DICOMwebClient(orthanc.dicomweb_url,
                            session=create_session_from_user_pass(orthanc.username, orthanc.password))
    found = client.search_for_series(study_instance_uid=study_uid, search_filters={"Modality": "SEG"})
    instances = []
    for item in found:
        series_uid = pydicom.Dataset.from_json(item).SeriesInstanceUID
        instances += client.retrieve_series(study_uid, series_uid)
    return instances
