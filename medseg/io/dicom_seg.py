"""DICOM Segmentation (SEG) objects through highdicom: a label map written as a binary SEG that references its source
series, and a SEG read back to a label map on the source grid.

Segments: one per foreground label of ``label_names`` (empty ones included, so every SEG of one model numbers its
segments alike), numbered 1..N in label-value order; the segment label is the label's name and its coded property
comes from ``medseg.io.segment_codes``. When the label values are 1..N, segment numbers equal label values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from medseg.atomic import atomic_write
from medseg.errors import MedsegError
from medseg.io.dicom_source import foreground_labels, index_to_world, require_series_grid, series_grid
from medseg.io.dicom_source import software_version, sort_slices
from medseg.io.image import Image
from medseg.io.segment_codes import SegmentCode, segment_code, segment_colour

SEG_SERIES_NUMBER = 900  # a series number far from the scanner's own (1, 2, ...)


def _concept(coded):
    from highdicom.sr import CodedConcept

    scheme, value, meaning = coded
    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def write_dicom_seg(labels: Image, source: Sequence, label_names: dict[int, str], path: str | Path, *,
                    codes: dict[str, SegmentCode] | None = None, series_description: str = "medseg segmentation",
                    manufacturer: str = "medseg", manufacturer_model_name: str = "medseg",
                    software_versions: str | None = None, device_serial_number: str = "0",
                    series_number: int = SEG_SERIES_NUMBER) -> Path:
    """Write ``labels`` ``(1, Z, Y, X)`` as a binary DICOM SEG at ``path`` (atomically) and return ``path``.

    ``source``: the ``pydicom.Dataset`` of every slice of the series the labels were predicted for, any order
    (headers suffice); array ``z = k`` is the ``k``-th slice along the slice normal, as ``read_image`` reads the
    series. ``label_names``: label value -> name (0, the background, is not a segment). ``codes`` adds to or
    overrides ``segment_codes.CODES``. ``MedsegError`` when the labels are not on the source grid or hold a value
    without a name.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes as dicom_codes
    from pydicom.uid import generate_uid

    path = Path(path)
    slices = sort_slices(source, path)
    require_series_grid(labels, slices, path)
    segments = foreground_labels(labels, label_names, path)
    lookup = np.zeros(int(labels.array.max()) + 1, dtype=np.uint16)
    for number, (value, _) in enumerate(segments, start=1):
        if value < lookup.size:
            lookup[value] = number
    segment_map = lookup[labels.array[0].astype(np.intp)]  # (Z, Y, X) segment numbers, 0 outside every segment
    algorithm = hd.AlgorithmIdentificationSequence(name="medseg", family=dicom_codes.cid7162.ArtificialIntelligence,
                                                   version=software_version().split(" ")[-1])
    descriptions = []
    for number, (value, name) in enumerate(segments, start=1):
        code = segment_code(name, codes)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=name, segmented_property_category=_concept(code.category),
            segmented_property_type=_concept(code.property_type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*segment_colour(number))))
    seg = hd.seg.Segmentation(
        source_images=slices, pixel_array=segment_map, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=series_number,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer=manufacturer,
        manufacturer_model_name=manufacturer_model_name,
        software_versions=software_versions or software_version(),
        device_serial_number=device_serial_number, series_description=series_description,
        content_label="MEDSEG", content_description=series_description[:64])
    atomic_write(path, lambda temporary: seg.save_as(temporary, enforce_file_format=True), suffix=".dcm")
    return path


def read_dicom_seg(path: str | Path, source: Sequence | Image | None = None, *,
                   label_names: dict[int, str] | None = None) -> Image:
    """Read a DICOM SEG as a label map ``Image`` ``(1, Z, Y, X)`` (uint16).

    ``source``: the source series' datasets (any order; the map is on their grid, slice by referenced
    instance), an ``Image`` on the source grid (frames placed by their patient positions), or None (the grid the
    SEG's frames span). Label values: with ``label_names`` (value -> name), the value named by each segment's
    label; without, the segment number. Overlapping segments take the highest segment number.
    """
    import highdicom as hd

    path = Path(path)
    try:
        seg = hd.seg.segread(path)
    except Exception as error:
        raise MedsegError(f"not a readable DICOM SEG ({str(error).splitlines()[0][:200] if str(error) else error!r})",
                          path=path, fix="pass a DICOM Segmentation object (.dcm) that medseg or another tool wrote")
    values = _segment_values(seg, label_names, path)
    if isinstance(source, Image):
        segment_map, grid = _by_position(seg, source, path), source
    elif source is not None:
        slices = sort_slices(source, path)
        grid = series_grid(slices)
        _require_references(seg, slices, path)
        segment_map = seg.get_pixels_by_source_instance(
            [str(d.SOPInstanceUID) for d in slices], combine_segments=True, relabel=False,
            assert_missing_frames_are_empty=True, skip_overlap_checks=True, dtype=np.uint16)
    else:
        volume = seg.get_volume(combine_segments=True, skip_overlap_checks=True, dtype=np.uint16)
        segment_map, grid = _volume_on_own_grid(volume)
    return Image(values[np.asarray(segment_map, dtype=np.intp)][None], grid.spacing, grid.origin,
                 grid.direction.copy(), {"SeriesInstanceUID": str(seg.SeriesInstanceUID), "Modality": "SEG"})


def _segment_values(seg, label_names: dict[int, str] | None, path: Path) -> np.ndarray:
    """Lookup ``segment number -> label value`` (index 0: background)."""
    numbers = [int(item.SegmentNumber) for item in seg.SegmentSequence]
    by_name = {str(n): int(v) for v, n in (label_names or {}).items()}
    values = np.zeros(max(numbers, default=0) + 1, dtype=np.uint16)
    for item in seg.SegmentSequence:
        number, name = int(item.SegmentNumber), str(item.SegmentLabel)
        if label_names is None:
            values[number] = number
        elif name in by_name:
            values[number] = by_name[name]
        else:
            raise MedsegError(f"segment {number} '{name}' is not one of the label names {sorted(by_name)}",
                              path=path, fix="pass the label names of the model that wrote this SEG")
    return values


def _require_references(seg, slices: Sequence, path: Path) -> None:
    referenced = {series for _, series, _ in seg.get_source_image_uids()}
    series = str(slices[0].get("SeriesInstanceUID", ""))
    if series not in {str(s) for s in referenced}:
        raise MedsegError(f"the SEG references series {', '.join(sorted(map(str, referenced)))}, not the source "
                          f"series {series}", path=path, fix="pass the series this SEG was made for")


def _volume_on_own_grid(volume) -> tuple[np.ndarray, Image]:
    """A highdicom ``Volume`` ``(slices, rows, columns)`` as the array and grid ``read_image`` would give a series:
    slices ascending along ``row x column`` (highdicom may stack them the other way)."""
    affine = np.asarray(volume.affine, dtype=np.float64).copy()
    array = np.asarray(volume.array)
    if np.dot(affine[:3, 0], np.cross(affine[:3, 2], affine[:3, 1])) < 0:
        affine[:3, 3] += affine[:3, 0] * (array.shape[0] - 1)
        affine[:3, 0] *= -1
        array = array[::-1]
    spacing = tuple(float(np.linalg.norm(affine[:3, axis])) for axis in range(3))
    direction = np.stack([affine[:3, 2 - j] / spacing[2 - j] for j in range(3)], axis=1)
    grid = Image(np.broadcast_to(np.zeros((1, 1, 1, 1), np.uint8), (1, *array.shape)), spacing,
                 tuple(affine[:3, 3]), direction)
    return np.ascontiguousarray(array), grid


def _by_position(seg, grid: Image, path: Path) -> np.ndarray:
    import highdicom as hd

    if grid.ndim != 3:
        raise MedsegError(f"a DICOM SEG reads onto a 3D grid, not {grid.spatial_shape}", path=path,
                          fix="pass the 3D image the SEG was made for")
    volume = seg.get_volume(combine_segments=True, skip_overlap_checks=True, dtype=np.uint16)
    target = hd.VolumeGeometry(index_to_world(grid), grid.spatial_shape, coordinate_system="PATIENT")
    try:
        return volume.match_geometry(target, tol=1e-3).array
    except RuntimeError as error:
        raise MedsegError(f"the SEG's frames do not lie on the image's grid ({error})", path=path,
                          fix="pass the image (or series) the SEG was made for") from None
