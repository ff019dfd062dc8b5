"""DICOM series folders: slices sorted by patient position, rescale slope/intercept applied (through GDCM)."""

from __future__ import annotations

from pathlib import Path

from medseg.errors import MedsegError
from medseg.io.image import Image
from medseg.io.sitk_io import sitk_to_image

# Tags kept in Image.metadata (group|element -> name).
KEPT_TAGS = {
    "0008|0060": "Modality",
    "0020|000e": "SeriesInstanceUID",
    "0020|000d": "StudyInstanceUID",
    "0010|0020": "PatientID",
    "0008|103e": "SeriesDescription",
}


def series_files(folder: Path, series_uid: str | None = None) -> list[str]:
    """The files of one DICOM series in ``folder``, in GDCM's slice order (by position along the slice normal);
    a folder with several series needs ``series_uid``. ``MedsegError`` when there is no such series."""
    import SimpleITK as sitk

    warnings = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM warns on stderr of a folder without a series
    try:
        series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings)
    if not series_ids:
        raise MedsegError("no DICOM series found in this folder", path=folder,
                          fix="point to a folder of .dcm slices of one series")
    if series_uid is None:
        if len(series_ids) > 1:
            raise MedsegError(f"{len(series_ids)} DICOM series in one folder: {', '.join(series_ids)}",
                              path=folder, fix="pass series_uid= or put each series in its own folder")
        series_uid = series_ids[0]
    elif series_uid not in series_ids:
        raise MedsegError(f"series {series_uid} not in this folder (has {', '.join(series_ids)})", path=folder,
                          fix="pass one of the listed series UIDs")
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid))


def read_dicom_series(folder: Path, series_uid: str | None = None) -> Image:
    """Read one DICOM series from ``folder`` as a 3D image.

    Slices are ordered by their position along the slice normal (GDCM's sorter), and pixel values are mapped to
    real units (e.g. HU) with RescaleSlope/RescaleIntercept. A folder with several series needs ``series_uid``.
    """
    import SimpleITK as sitk

    files = series_files(folder, series_uid)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    sitk_image = reader.Execute()
    metadata = {"files": len(files)}
    for tag, name in KEPT_TAGS.items():
        if reader.HasMetaDataKey(0, tag):
            metadata[name] = reader.GetMetaData(0, tag).strip()
    return sitk_to_image(sitk_image, metadata)
