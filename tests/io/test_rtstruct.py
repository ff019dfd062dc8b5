"""RTSTRUCT out and back: a BraTS-derived series' labels written as contours (checked by dciodvfy), each contour
referencing its slice, and rasterised back onto the source grid with Dice >= 0.98 per label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.errors import MedsegError
from medseg.io.contours import mask_polygons
from medseg.io.rtstruct import read_rtstruct, write_rtstruct
from medseg.metrics import confusion, dice

pytestmark = pytest.mark.slow  # the session's BraTS-derived series takes seconds to build on a loaded machine


@pytest.fixture(scope="module")
def rtstruct_file(brats_dicom, tmp_path_factory) -> Path:
    return write_rtstruct(brats_dicom.labels, brats_dicom.headers(), brats_dicom.names,
                          tmp_path_factory.mktemp("rt") / "labels.rtstruct.dcm")


def test_rtstruct_passes_dciodvfy_and_references_the_series(brats_dicom, rtstruct_file, dciodvfy) -> None:
    assert dciodvfy(rtstruct_file) == []
    ds = pydicom.dcmread(rtstruct_file)
    assert ds.Modality == "RTSTRUCT"
    assert [r.ROIName for r in ds.StructureSetROISequence] == list(brats_dicom.names.values())
    source = {d.SOPInstanceUID: d for d in brats_dicom.headers()}
    series = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == next(iter(source.values())).SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in series.ContourImageSequence} == set(source)
    for roi in ds.ROIContourSequence:
        for contour in roi.ContourSequence:
            slice_ = source[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
            points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            assert contour.NumberOfContourPoints == len(points) and contour.ContourGeometricType == "CLOSED_PLANAR"
            normal = np.cross(*np.reshape(np.asarray(slice_.ImageOrientationPatient, float), (2, 3)))
            offsets = (points - np.asarray(slice_.ImagePositionPatient, float)) @ normal
            np.testing.assert_allclose(offsets, 0, atol=1e-3)  # each contour lies in the plane of its slice


def test_contours_rasterise_back_with_dice_of_at_least_098(brats_dicom, rtstruct_file) -> None:
    back = read_rtstruct(rtstruct_file, brats_dicom.headers()[::-1], label_names=brats_dicom.names)
    assert back.same_grid(brats_dicom.labels, tolerance=1e-5)
    for value in brats_dicom.names:
        score = dice(confusion(back.array[0] == value, brats_dicom.labels.array[0] == value))
        assert score >= 0.98, (value, score)
    on_image = read_rtstruct(rtstruct_file, brats_dicom.image)  # ROI numbers are the label values 1..4 here
    np.testing.assert_array_equal(on_image.array, back.array)


def test_holes_and_border_pixels_survive(brats_dicom, tmp_path: Path) -> None:
    array = np.zeros(brats_dicom.labels.array.shape, dtype=np.uint8)
    array[0, 5, 10:30, 10:30] = 1
    array[0, 5, 15:25, 15:25] = 0  # a hole
    array[0, 5, 18:22, 18:22] = 2  # an island inside the hole, another label
    array[0, 7, 0:6, 58:64] = 1  # touching the image border
    array[0, 9, 40, 40] = 2  # one pixel
    labels = brats_dicom.labels.with_array(array)
    path = write_rtstruct(labels, brats_dicom.headers(), {1: "ring", 2: "dots"}, tmp_path / "x.dcm")
    back = read_rtstruct(path, brats_dicom.headers(), label_names={1: "ring", 2: "dots"})
    np.testing.assert_array_equal(back.array, array)
    assert len(mask_polygons(array[0, 5] == 1)) == 1  # the hole is keyholed into the outer boundary


def test_bad_input_is_one_error_and_nothing_is_written(brats_dicom, rtstruct_file, tmp_path: Path) -> None:
    target = tmp_path / "out" / "x.dcm"
    with pytest.raises(MedsegError, match="no name"):
        write_rtstruct(brats_dicom.labels, brats_dicom.headers(), {1: "a"}, target)
    flat = brats_dicom.labels.with_array(brats_dicom.labels.array[:, :1].repeat(24, axis=1))
    moved = type(flat)(flat.array, (3.0, *flat.spacing[1:]), flat.origin, flat.direction)
    with pytest.raises(MedsegError, match="not on the source series' grid"):
        write_rtstruct(moved, brats_dicom.headers(), brats_dicom.names, target)
    assert not target.parent.exists() or list(target.parent.iterdir()) == []
    with pytest.raises(MedsegError, match="not a readable RTSTRUCT"):
        read_rtstruct(sorted(brats_dicom.folder.iterdir())[0], brats_dicom.image)
    with pytest.raises(MedsegError, match="not among the label names"):
        read_rtstruct(rtstruct_file, brats_dicom.image, label_names={1: "liver"})


def test_plastimatch_rasterises_the_contours_to_the_labels(brats_dicom, rtstruct_file, tmp_path: Path) -> None:
    """plastimatch (an RT toolkit; it ORs a ROI's contours unless told to XOR them) is the peer reader: keyholed
    holes make both readings give the labels back."""
    import subprocess

    from medseg.io import read_image
    from tests.io.conftest import peer_program

    program = peer_program("plastimatch", "apt-get install plastimatch (scripts/install_system_packages.sh does)")
    for mode in ([], ["--xor-contours"]):
        out = tmp_path / ("xor" if mode else "or")
        subprocess.run([program, "convert", "--input", str(rtstruct_file), "--referenced-ct", str(brats_dicom.folder),
                        "--output-prefix", str(out), *mode], check=True, capture_output=True)
        for value, name in brats_dicom.names.items():
            mask = read_image(out / f"{name}.mha")
            assert mask.same_grid(brats_dicom.labels, tolerance=1e-4)
            score = dice(confusion(mask.array[0] > 0, brats_dicom.labels.array[0] == value))
            assert score >= 0.98, (mode, name, score)
