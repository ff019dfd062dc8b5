"""DICOM SEG out and back: a BraTS-derived series' label map written with highdicom, checked by highdicom's reader
and by dciodvfy, and read back equal voxel for voxel on the source grid (from datasets, an Image or alone)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.errors import MedsegError
from medseg.io import Image
from medseg.io.dicom_seg import read_dicom_seg, write_dicom_seg
from medseg.io.segment_codes import CODES, GENERIC, segment_code

highdicom = pytest.importorskip("highdicom")
pytestmark = pytest.mark.slow  # the session's BraTS-derived series takes seconds to build on a loaded machine


@pytest.fixture(scope="module")
def seg_file(brats_dicom, tmp_path_factory) -> Path:
    return write_dicom_seg(brats_dicom.labels, brats_dicom.headers(), brats_dicom.names,
                           tmp_path_factory.mktemp("seg") / "labels.seg.dcm")


def test_seg_passes_highdicom_and_dciodvfy_and_describes_each_label(brats_dicom, seg_file, dciodvfy) -> None:
    seg = highdicom.seg.segread(seg_file)  # highdicom parses and checks the SEG IOD on reading
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["necrosis", "edema", "non_enhancing", "enhancing"]
    necrosis = seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0]
    assert (necrosis.CodingSchemeDesignator, necrosis.CodeValue) == ("SCT", "6574001")
    colours = [tuple(s.RecommendedDisplayCIELabValue) for s in seg.SegmentSequence]
    assert len(set(colours)) == 4  # each segment its own colour in a viewer
    source = brats_dicom.headers()
    assert seg.StudyInstanceUID == source[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == source[0].FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source[0].SeriesInstanceUID
    # one frame per (segment, slice) where the label occurs: empty frames are left out
    labels = brats_dicom.labels.array[0]
    assert seg.NumberOfFrames == sum(int((labels == v).any(axis=(1, 2)).sum()) for v in brats_dicom.names)
    assert dciodvfy(seg_file) == []


def test_seg_reads_back_equal_on_the_source_grid(brats_dicom, seg_file) -> None:
    shuffled = brats_dicom.headers()[::-1]
    from_datasets = read_dicom_seg(seg_file, shuffled, label_names=brats_dicom.names)
    np.testing.assert_array_equal(from_datasets.array, brats_dicom.labels.array)
    assert from_datasets.same_grid(brats_dicom.image, tolerance=1e-5)
    from_image = read_dicom_seg(seg_file, brats_dicom.image)
    np.testing.assert_array_equal(from_image.array, brats_dicom.labels.array)  # values 1..4 are segment numbers


def test_seg_alone_reads_the_grid_its_frames_span(brats_dicom, seg_file) -> None:
    alone = read_dicom_seg(seg_file)
    labels = brats_dicom.labels.array[0]
    occupied = np.flatnonzero(labels.any(axis=(1, 2)))
    z0, z1 = occupied[0], occupied[-1] + 1
    np.testing.assert_array_equal(alone.array[0], labels[z0:z1])
    expected_origin = brats_dicom.image.origin + brats_dicom.image.direction[:, 2] * z0 * brats_dicom.image.spacing[0]
    np.testing.assert_allclose(alone.origin, expected_origin, atol=1e-4)
    np.testing.assert_allclose(alone.direction, brats_dicom.image.direction, atol=1e-6)


def test_empty_segments_and_values_that_are_not_one_to_n(brats_dicom, tmp_path: Path) -> None:
    array = np.where(brats_dicom.labels.array == 2, 5, np.where(brats_dicom.labels.array == 4, 2, 0))
    labels = brats_dicom.labels.with_array(array.astype(np.uint8))
    names = {0: "background", 1: "liver", 2: "tumour", 5: "my structure"}
    path = write_dicom_seg(labels, brats_dicom.headers(), names, tmp_path / "x.dcm")
    seg = highdicom.seg.segread(path)
    assert [(s.SegmentNumber, s.SegmentLabel) for s in seg.SegmentSequence] == [
        (1, "liver"), (2, "tumour"), (3, "my structure")]  # liver is empty and still a segment
    generic = seg.SegmentSequence[2].SegmentedPropertyTypeCodeSequence[0]
    assert generic.CodeValue == GENERIC.property_type[1]
    np.testing.assert_array_equal(read_dicom_seg(path, brats_dicom.headers(), label_names=names).array, array)
    by_number = read_dicom_seg(path, brats_dicom.headers()).array  # without names: segment numbers
    np.testing.assert_array_equal(by_number, np.select([array == 2, array == 5], [2, 3], 0))


def test_bad_labels_are_one_error_and_nothing_is_written(brats_dicom, tmp_path: Path) -> None:
    target = tmp_path / "out" / "x.seg.dcm"
    shifted = Image(brats_dicom.labels.array, brats_dicom.labels.spacing,
                    tuple(np.add(brats_dicom.labels.origin, 3.0)), brats_dicom.labels.direction)
    with pytest.raises(MedsegError, match="not on the source series' grid"):
        write_dicom_seg(shifted, brats_dicom.headers(), brats_dicom.names, target)
    with pytest.raises(MedsegError, match="a label map holds whole numbers >= 0"):
        write_dicom_seg(brats_dicom.image, brats_dicom.headers(), brats_dicom.names, target)  # the image itself
    with pytest.raises(MedsegError, match=r"label value\(s\) \[4\] have no name"):
        write_dicom_seg(brats_dicom.labels, brats_dicom.headers(), {1: "a", 2: "b", 3: "c"}, target)
    with pytest.raises(MedsegError, match="x.seg.dcm: the source slices are not evenly spaced"):
        write_dicom_seg(brats_dicom.labels, brats_dicom.headers()[1:], brats_dicom.names, target)  # one missing
    first_dropped = sorted(brats_dicom.headers(), key=lambda d: int(d.InstanceNumber))[1:]
    with pytest.raises(MedsegError, match=r"not on the source series' grid \(shape"):
        write_dicom_seg(brats_dicom.labels, first_dropped, brats_dicom.names, target)
    assert not target.parent.exists() or list(target.parent.iterdir()) == []


def test_reading_a_non_seg_or_against_another_series_is_one_error(brats_dicom, seg_file, tmp_path: Path) -> None:
    slice_file = sorted(brats_dicom.folder.iterdir())[0]
    with pytest.raises(MedsegError, match="not a readable DICOM SEG"):
        read_dicom_seg(slice_file)
    other, uid = brats_dicom.headers(), pydicom.uid.generate_uid()
    for dataset in other:
        dataset.SeriesInstanceUID = uid
    with pytest.raises(MedsegError, match="references series"):
        read_dicom_seg(seg_file, other)
    with pytest.raises(MedsegError, match="segment 1 'necrosis' is not one of the label names"):
        read_dicom_seg(seg_file, brats_dicom.headers(), label_names={1: "liver"})


def test_code_table_agrees_with_the_dicom_code_dictionary() -> None:
    from pydicom.sr._concepts_dict import concepts

    by_value: dict[tuple[str, str], set[str]] = {}
    for scheme in ("SCT", "DCM"):
        for entries in concepts[scheme].values():
            for value, (meaning, _) in entries.items():
                by_value.setdefault((scheme, value), set()).add(meaning.lower())
    for name, code in {**CODES, "generic": GENERIC}.items():
        for scheme, value, meaning in (code.category, code.property_type):
            assert meaning.lower() in by_value.get((scheme, value), set()), (name, scheme, value, meaning)
    assert segment_code("Non-Enhancing Tumour") == CODES["non_enhancing_tumour"]
    assert segment_code("left ventricle myocardium") == GENERIC


def test_a_seg_of_one_slice_or_of_nothing_reads_back(brats_dicom, tmp_path: Path) -> None:
    one = np.zeros(brats_dicom.labels.array.shape, dtype=np.uint8)
    one[0, 7, 10:20, 10:30] = 2
    path = write_dicom_seg(brats_dicom.labels.with_array(one), brats_dicom.headers(), brats_dicom.names,
                           tmp_path / "one.dcm")
    np.testing.assert_array_equal(read_dicom_seg(path, brats_dicom.image).array, one)  # placed by position
    np.testing.assert_array_equal(read_dicom_seg(path, brats_dicom.headers()).array, one)
    empty = np.zeros_like(one)  # a prediction without foreground is still a SEG of the series (all frames empty)
    path = write_dicom_seg(brats_dicom.labels.with_array(empty), brats_dicom.headers(), brats_dicom.names,
                           tmp_path / "empty.dcm")
    np.testing.assert_array_equal(read_dicom_seg(path, brats_dicom.headers()).array, empty)


def test_dcmqi_reads_the_seg_as_the_label_map(brats_dicom, seg_file, tmp_path: Path) -> None:
    """dcmqi's segimage2itkimage (the SEG converter behind 3D Slicer's DICOM SEG import) is the peer reader."""
    import json
    import subprocess

    from medseg.io import read_image
    from tests.io.conftest import peer_program

    program = peer_program("segimage2itkimage", "pip install dcmqi (the dev extra installs it)")
    subprocess.run([program, "--inputDICOM", str(seg_file), "--outputDirectory", str(tmp_path), "--outputType",
                    "nrrd", "--mergeSegments"], check=True, capture_output=True)
    merged = read_image(tmp_path / "1.nrrd")
    assert merged.same_grid(brats_dicom.image, tolerance=1e-4)
    np.testing.assert_array_equal(merged.array, brats_dicom.labels.array)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert [s["SegmentLabel"] for s in meta["segmentAttributes"][0]] == list(brats_dicom.names.values())
