"""``medseg predict --output-format dicom-seg|rtstruct`` on a DICOM series folder: the SEG reads back equal, voxel for
voxel, to the NIfTI prediction of the same series, the RTSTRUCT rasterises back to it (Dice >= 0.98); a DICOM
output for an input that is not a DICOM series is one line and exit 2 before anything is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.io import Image, read_image
from medseg.io.dicom_seg import read_dicom_seg
from medseg.io.dicom_write import write_dicom_series
from medseg.io.rtstruct import read_rtstruct
from medseg.metrics import confusion, dice

pytestmark = pytest.mark.slow  # three predictions of a small series

NAMES = {1: "organ", 2: "lesion"}  # the shapes dataset's labels, which the model folder records


def _predict(*args) -> None:
    result = CliRunner().invoke(app, ["predict", *[str(a) for a in args]])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def series(tmp_path_factory, shapes_dataset: Path) -> Path:
    image = read_image(shapes_dataset / "imagesTr" / "shapes_000_0000.nii.gz")
    small = Image(image.array[:, :12], image.spacing, image.origin, image.direction)
    folder = tmp_path_factory.mktemp("dicom_in") / "case_a"
    write_dicom_series(small, folder, file_order=[int(i) for i in np.random.default_rng(1).permutation(12)])
    return folder


def test_dicom_seg_and_rtstruct_equal_the_nifti_prediction(tmp_path: Path, series: Path, shapes_model: Path) -> None:
    common = ["-m", shapes_model, "-f", "0", "--no-tta"]
    _predict("-i", series, "-o", tmp_path / "nifti", *common)
    _predict("-i", series, "-o", tmp_path / "seg", "--output-format", "dicom-seg", *common)
    _predict("-i", series, "-o", tmp_path / "rt", "--output-format", "rtstruct", *common)
    assert [p.name for p in (tmp_path / "nifti").iterdir()] == ["case_a.nii.gz"]  # the series is one case
    assert [p.name for p in (tmp_path / "seg").iterdir()] == ["case_a.seg.dcm"]
    assert [p.name for p in (tmp_path / "rt").iterdir()] == ["case_a.rtstruct.dcm"]
    expected = read_image(tmp_path / "nifti" / "case_a.nii.gz")
    assert expected.spatial_shape == (12, 64, 64) and len(np.unique(expected.array)) == 3  # not an empty map
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(series.iterdir())]

    seg = read_dicom_seg(tmp_path / "seg" / "case_a.seg.dcm", sources, label_names=NAMES)
    np.testing.assert_array_equal(seg.array, expected.array)
    assert seg.same_grid(expected, tolerance=1e-5)
    assert [s.SegmentLabel for s in pydicom.dcmread(tmp_path / "seg" / "case_a.seg.dcm").SegmentSequence] == [
        "organ", "lesion"]

    contours = read_rtstruct(tmp_path / "rt" / "case_a.rtstruct.dcm", sources, label_names=NAMES)
    for value in NAMES:
        assert dice(confusion(contours.array[0] == value, expected.array[0] == value)) >= 0.98


def test_dicom_output_of_a_non_dicom_input_is_one_line_and_exit_2(tmp_path: Path, shapes_dataset: Path,
                                                                  shapes_model: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "medseg", "predict", "-i",
                             str(shapes_dataset / "imagesTr" / "shapes_000_0000.nii.gz"), "-o", str(out), "-m",
                             str(shapes_model), "--output-format", "dicom-seg"], capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs a DICOM series as input" in lines[0] and "shapes_000_0000" in lines[0]
    assert not out.exists()
    bogus = CliRunner().invoke(app, ["predict", "-i", str(shapes_dataset), "-o", str(out), "-m", str(shapes_model),
                                     "--output-format", "dicom"])
    assert bogus.exit_code == 2 and "is not one of nifti, dicom-seg, rtstruct" in bogus.output
    assert not out.exists()
    rt_to_pacs = CliRunner().invoke(app, ["predict", "--dicomweb", "http://127.0.0.1:9/dicom-web", "--study", "1.2.3",
                                          "-m", str(shapes_model), "--output-format", "rtstruct"])
    assert rt_to_pacs.exit_code == 2 and "--dicomweb stores a DICOM SEG" in rt_to_pacs.output  # before connecting
