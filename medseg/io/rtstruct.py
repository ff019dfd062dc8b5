"""RT Structure Sets (RTSTRUCT): a label map written as planar contours per label and slice, and read back.

Contours are ``medseg.io.contours.mask_polygons`` of each slice's binary mask: one closed polygon per connected
piece with its holes keyholed in, so that filling them gives the mask back exactly, whether a reader ORs or XORs a
ROI's contours. Written with pydicom; one ROI per foreground label of ``label_names``, empty ones included.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Sequence

import numpy as np

from medseg.atomic import atomic_write
from medseg.errors import MedsegError
from medseg.io.contours import fill_polygons, mask_polygons
from medseg.io.dicom_source import foreground_labels, index_to_world, require_series_grid, series_grid
from medseg.io.dicom_source import software_version, sort_slices
from medseg.io.image import Image
from medseg.io.segment_codes import segment_colour

RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
CONTOUR_DATA = 0x30060050
STUDY_COMPONENT = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management, the class RT referenced studies name
COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
          "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")


def write_rtstruct(labels: Image, source: Sequence, label_names: dict[int, str], path: str | Path, *,
                   structure_set_label: str = "medseg", series_description: str = "medseg contours",
                   series_number: int = 901) -> Path:
    """Write ``labels`` ``(1, Z, Y, X)`` as an RTSTRUCT at ``path`` (atomically) and return ``path``.

    ``source``: the ``pydicom.Dataset`` of every slice of the labels' series, any order (array ``z = k`` is the
    ``k``-th slice along the normal, as ``read_image`` reads the series); each contour references its slice.
    ``label_names``: label value -> ROI name. ``MedsegError`` when the labels are not on the source grid.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    path = Path(path)
    slices = sort_slices(source, path)
    require_series_grid(labels, slices, path)
    rois = foreground_labels(labels, label_names, path)
    first, now = slices[0], datetime.datetime.now()

    def reference(dataset) -> Dataset:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = dataset.SOPClassUID, dataset.SOPInstanceUID
        return item

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = RTSTRUCT_STORAGE, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_STORAGE, meta.MediaStorageSOPInstanceUID
    for keyword in COPIED:
        setattr(ds, keyword, first.get(keyword, ""))
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "RTSTRUCT", generate_uid(), series_number
    ds.SeriesDescription, ds.OperatorsName, ds.InstanceNumber = series_description, "", 1
    ds.Manufacturer, ds.SoftwareVersions = "medseg", software_version()
    ds.FrameOfReferenceUID = first.FrameOfReferenceUID
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "")
    ds.StructureSetLabel = structure_set_label[:16]
    ds.StructureSetDate, ds.StructureSetTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = ds.StructureSetDate, ds.StructureSetTime

    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ContourImageSequence = DicomSequence([reference(d) for d in slices])
    study = Dataset()
    study.ReferencedSOPClassUID, study.ReferencedSOPInstanceUID = STUDY_COMPONENT, first.StudyInstanceUID
    study.RTReferencedSeriesSequence = DicomSequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame.RTReferencedStudySequence = DicomSequence([study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame])

    structures, contours, observations = [], [], []
    for number, (value, name) in enumerate(rois, start=1):
        roi = Dataset()
        roi.ROINumber, roi.ReferencedFrameOfReferenceUID = number, first.FrameOfReferenceUID
        roi.ROIName, roi.ROIGenerationAlgorithm = name, "AUTOMATIC"
        structures.append(roi)
        roi_contour = Dataset()
        roi_contour.ROIDisplayColor = list(segment_colour(number))
        roi_contour.ReferencedROINumber = number
        items = [_contour_item(points, dataset, reference(dataset))
                 for z, dataset in enumerate(slices) if (labels.array[0, z] == value).any()
                 for points in mask_polygons(labels.array[0, z] == value)]
        if items:
            roi_contour.ContourSequence = DicomSequence(items)
        contours.append(roi_contour)
        observation = Dataset()
        observation.ObservationNumber, observation.ReferencedROINumber = number, number
        observation.RTROIInterpretedType, observation.ROIInterpreter = "ORGAN", ""
        observations.append(observation)
    ds.StructureSetROISequence = DicomSequence(structures)
    ds.ROIContourSequence = DicomSequence(contours)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    atomic_write(path, lambda temporary: ds.save_as(temporary, enforce_file_format=True), suffix=".dcm")
    return path


def _contour_item(points: np.ndarray, dataset, image_reference):
    """One CLOSED_PLANAR contour item: (row, column) pixel coordinates of ``dataset``'s slice -> LPS mm."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    orientation = np.asarray(dataset.ImageOrientationPatient, dtype=np.float64)
    dy, dx = (float(v) for v in dataset.PixelSpacing)
    world = (np.asarray(dataset.ImagePositionPatient, dtype=np.float64)
             + points[:, 1:2] * dx * orientation[:3] + points[:, 0:1] * dy * orientation[3:])
    item = Dataset()
    item.ContourImageSequence = DicomSequence([image_reference])
    item.ContourGeometricType, item.NumberOfContourPoints = "CLOSED_PLANAR", len(world)
    item[CONTOUR_DATA] = _raw_decimal_strings(world.ravel())
    return item


def _raw_decimal_strings(values: np.ndarray):
    """A DS element of ``values`` (mm, 4 decimals) as encoded bytes: pydicom validates each value of a list it is
    given one by one, which takes minutes for the contours of a large CT."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    text = "\\".join(f"{v:.4f}" for v in values).encode("ascii")
    if len(text) % 2:
        text += b" "
    return RawDataElement(Tag(CONTOUR_DATA), "DS", len(text), text, 0, False, True)


def _contour_points(item) -> np.ndarray:
    """``(N, 3)`` LPS points of a contour item, parsed from the encoded bytes when pydicom has not decoded them."""
    element = item.get_item(CONTOUR_DATA)
    if element is None:
        return np.zeros((0, 3))
    value = element.value
    if isinstance(value, bytes):
        values = np.array(value.decode("ascii").strip(" \x00").split("\\"), dtype=np.float64)
    else:
        values = np.atleast_1d(np.asarray(value, dtype=np.float64))
    return values.reshape(-1, 3)


def read_rtstruct(path: str | Path, source: Sequence | Image, *, label_names: dict[int, str] | None = None) -> Image:
    """Rasterise an RTSTRUCT's contours onto the source grid: a label map ``Image`` ``(1, Z, Y, X)`` (uint16).

    ``source``: the series' datasets (any order) or an ``Image`` on its grid. A contour lies on the slice nearest
    its points; pixels whose centre is inside an odd number of a ROI's contours of that slice belong to the ROI
    (holes are contours inside contours). Values: with ``label_names`` (value -> name), the value named by each
    ROI's name; without, the ROI number. Where ROIs overlap, the later ROI wins.
    """
    import pydicom

    path = Path(path)
    grid = source if isinstance(source, Image) else series_grid(sort_slices(source, path))
    try:
        ds = pydicom.dcmread(path)
        names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
        roi_contours = list(ds.ROIContourSequence)
    except Exception as error:
        raise MedsegError(f"not a readable RTSTRUCT ({str(error)[:200] or type(error).__name__})", path=path,
                          fix="pass an RT Structure Set (.dcm)") from None
    values = {number: number for number in names}
    if label_names is not None:
        by_name = {str(n): int(v) for v, n in label_names.items()}
        unknown = sorted(set(names.values()) - set(by_name))
        if unknown:
            raise MedsegError(f"ROI(s) {unknown} are not among the label names {sorted(by_name)}", path=path,
                              fix="pass the label names of the model that wrote this RTSTRUCT")
        values = {number: by_name[name] for number, name in names.items()}
    world_to_index = np.linalg.inv(index_to_world(grid))
    shape = grid.spatial_shape
    out = np.zeros(shape, dtype=np.uint16)
    for roi_contour in roi_contours:
        planes: dict[int, list[np.ndarray]] = {}
        for item in roi_contour.get("ContourSequence", []):
            points = _contour_points(item)
            if len(points) < 3:
                continue
            index = (world_to_index[:3, :3] @ points.T).T + world_to_index[:3, 3]  # (N, 3) as (z, y, x)
            z = int(np.rint(index[:, 0].mean()))
            if 0 <= z < shape[0]:
                planes.setdefault(z, []).append(index[:, 1:])
        for z, polygons in planes.items():
            out[z][fill_polygons(polygons, shape[1:])] = values[int(roi_contour.ReferencedROINumber)]
    return Image(out[None], grid.spacing, grid.origin, grid.direction.copy(), {"Modality": "RTSTRUCT"})
