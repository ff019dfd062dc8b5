"""Corrupt NIfTI headers and folders where a file should be: one MedsegError naming the file, nothing on stderr.

niftilib prints ``** ERROR: nifti_convert_nhdr2nim: ...`` straight to file descriptor 2 and GDCM warns there of a
folder without a series; a CLI user would see those lines above medseg's one-line error, so the header is judged
before ITK sees it and GDCM's warning is silenced (``capfd`` captures the descriptor, not only ``sys.stderr``).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import MedsegError
from medseg.io import Image, read_image, write_image


def _nifti(tmp_path: Path, name: str = "scan.nii.gz") -> Path:
    array = np.arange(4 * 5 * 6, dtype=np.float32).reshape(1, 4, 5, 6)
    image = Image(array, (3.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
    return write_image(image, tmp_path / name)


def _patch(path: Path, offset: int, fmt: str, value) -> None:
    raw = bytearray(gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes())
    raw[offset: offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    path.write_bytes(gzip.compress(bytes(raw)) if path.name.endswith(".gz") else bytes(raw))


@pytest.mark.parametrize("name", ["scan.nii.gz", "scan.nii"])
@pytest.mark.parametrize("offset, fmt, value, message", [
    (70, "<h", 1234, "datatype code 1234 is not a NIfTI type"),
    (40, "<h", 9, "9 dimensions"),
    (40, "<h", 0, "0 dimensions"),
    (44, "<h", 0, "image size below 1"),
    (42, "<h", -5, "image size below 1"),
    (88, "<f", float("nan"), r"voxel size \(pixdim\) is 1, 1, nan"),  # ITK read 1 mm, with a warning
    (84, "<f", float("inf"), r"voxel size \(pixdim\) is 1, inf, 3"),
])
def test_a_corrupt_nifti_header_is_one_error_and_no_stderr(tmp_path, capfd, name, offset, fmt, value, message):
    path = _nifti(tmp_path, name)
    _patch(path, offset, fmt, value)
    capfd.readouterr()
    with pytest.raises(MedsegError, match=message) as error:
        read_image(path)
    assert name in str(error.value) and "fix:" in str(error.value)
    assert capfd.readouterr().err == ""


def test_an_intact_nifti_still_reads(tmp_path, capfd):
    path = _nifti(tmp_path)
    assert read_image(path).array.shape == (1, 4, 5, 6)
    assert capfd.readouterr().err == ""


def test_a_zero_voxel_size_is_read_as_itk_reads_it(tmp_path):
    """pixdim 0 means 'unknown' to several writers; ITK reads 1 mm, and so does medseg (no refusal)."""
    path = _nifti(tmp_path, "scan.nii")
    _patch(path, 88, "<f", 0.0)
    assert read_image(path).spacing == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("name", ["c2_0000.nii.gz", "label.png", "scan.mha"])
def test_a_folder_named_like_an_image_file_is_refused(tmp_path, capfd, name):
    folder = tmp_path / name
    folder.mkdir()
    capfd.readouterr()
    with pytest.raises(MedsegError, match="is a folder, not a") as error:
        read_image(folder)
    assert name in str(error.value)
    assert capfd.readouterr().err == ""


def test_a_folder_without_dicom_is_one_error_and_gdcm_stays_quiet(tmp_path, capfd):
    import SimpleITK as sitk

    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "notes.txt").write_text("not DICOM")
    before = sitk.ProcessObject.GetGlobalWarningDisplay()
    capfd.readouterr()
    with pytest.raises(MedsegError, match="no DICOM series"):
        read_image(folder)
    assert capfd.readouterr().err == ""
    assert sitk.ProcessObject.GetGlobalWarningDisplay() == before  # the global switch is restored
