"""An ``Image`` written as a DICOM series (one single-frame file per slice), e.g. to hand a NIfTI to a PACS.

Values are stored as int16 with a RescaleSlope/RescaleIntercept that maps the image's range onto the int16 range,
so ``read_image(folder)`` gives the values back within half a slope.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.atomic import atomic_folder
from medseg.errors import MedsegError
from medseg.io.image import Image

STORAGE_CLASSES = {"MR": "1.2.840.10008.5.1.4.1.1.4", "CT": "1.2.840.10008.5.1.4.1.1.2"}


def write_dicom_series(image: Image, folder: str | Path, *, modality: str = "MR", patient_id: str = "anonymous",
                       patient_name: str = "anonymous^", study_uid: str | None = None,
                       series_uid: str | None = None, series_description: str = "", series_number: int = 1,
                       file_order: list[int] | None = None) -> list[Path]:
    """Write ``image`` ``(1, Z, Y, X)`` as MR (or CT) Image Storage files in the new ``folder`` (built under a
    temporary name, renamed when complete); returns the files, slice ``z`` first.

    Geometry: slice ``z`` lies at ``origin + z * spacing_z * direction[:, 2]``; rows follow ``direction[:, 1]``,
    columns ``direction[:, 0]``. ``file_order``: slice index of each file name ``IM0000.dcm``, ... (default the
    slice order; tests shuffle it). UIDs are generated unless given.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    if image.ndim != 3 or image.num_channels != 1:
        raise MedsegError(f"a DICOM series needs one 3D channel (1, Z, Y, X), not {image.array.shape}",
                          path=folder, fix="write one channel at a time")
    if modality not in STORAGE_CLASSES:
        raise MedsegError(f"modality {modality!r} is not one of {sorted(STORAGE_CLASSES)}", path=folder,
                          fix="use MR or CT")
    values = np.asarray(image.array[0], dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    slope = (high - low) / 65534.0 if high > low else 1.0
    intercept = low + 32767.0 * slope
    stored = np.clip(np.rint((values - intercept) / slope), -32767, 32767).astype(np.int16)
    study_uid, series_uid = study_uid or generate_uid(), series_uid or generate_uid()
    frame_uid = generate_uid()
    order = list(range(stored.shape[0])) if file_order is None else list(file_order)
    direction, (dz, dy, dx) = image.direction, image.spacing
    origin = np.asarray(image.origin, dtype=np.float64)
    names = {}
    with atomic_folder(folder) as partial:
        for file_index, z in enumerate(order):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = STORAGE_CLASSES[modality]
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = pydicom.Dataset()
            ds.file_meta = meta
            ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
            ds.Modality = modality
            ds.PatientID, ds.PatientName = patient_id, patient_name
            ds.PatientBirthDate, ds.PatientSex = "", ""
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
            ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20000101", "000000", "1", ""
            ds.ReferringPhysicianName = ""
            ds.SeriesNumber, ds.InstanceNumber = series_number, z + 1
            ds.SeriesDescription = series_description
            ds.PositionReferenceIndicator = ""
            ds.Manufacturer = "medseg"
            ds.PatientPosition, ds.Laterality = "HFS", ""
            ds.ImagePositionPatient = [float(v) for v in origin + z * dz * direction[:, 2]]
            ds.ImageOrientationPatient = [float(v) for v in (*direction[:, 0], *direction[:, 1])]
            ds.PixelSpacing = [float(dy), float(dx)]
            ds.SliceThickness = float(dz)
            ds.Rows, ds.Columns = stored.shape[1:]
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated = ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 1
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{slope:.10g}", f"{intercept:.10g}", "US"
            if modality == "MR":
                ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "RM", "NONE", "", "3D"
                ds.EchoTrainLength, ds.RepetitionTime, ds.EchoTime = 1, "", ""
                ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
            else:
                ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
                ds.KVP = ""
            ds.PixelData = stored[z].tobytes()
            name = f"IM{file_index:04d}.dcm"
            ds.save_as(partial / name, enforce_file_format=True)
            names[z] = name
    return [folder / names[z] for z in sorted(names)]
