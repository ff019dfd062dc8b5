"""``medseg predict --dicomweb`` against a real Orthanc: a BraTS-derived MR series uploaded, predicted, its DICOM
SEG stored back (STOW-RS), fetched back (QIDO-RS + WADO-RS) and read equal, voxel for voxel, to the local
prediction of the same files."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.inference.predictor import Predictor
from medseg.io.dicom import read_dicom_series
from medseg.io.dicom_seg import read_dicom_seg
from tests.dicomweb.series import brats_crop, credentials, segmentations, upload, write_mr_series

pytestmark = pytest.mark.slow


def test_predict_dicomweb_stores_a_seg_equal_to_the_local_prediction(orthanc, model: Path, tmp_path: Path):
    volume, spacing, origin = brats_crop()
    study_uid, series_uid = generate_uid(), generate_uid()
    files = write_mr_series(tmp_path / "series", volume, spacing, origin, study_uid=study_uid, series_uid=series_uid)
    upload(orthanc, files)

    result = CliRunner().invoke(app, ["predict", "--dicomweb", orthanc.dicomweb_url, "--study", study_uid,
                                      "-m", str(model), "--no-tta", *credentials(orthanc, tmp_path)])
    assert result.exit_code == 0, result.output
    stored = segmentations(orthanc, study_uid)
    assert len(stored) == 1
    seg = stored[0]
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == study_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    assert seg.SeriesInstanceUID in result.output
    seg_file = tmp_path / "fetched_seg.dcm"
    seg.save_as(seg_file, enforce_file_format=True)
    sources = [pydicom.dcmread(f) for f in files]
    fetched = read_dicom_seg(seg_file, sources, label_names={1: "organ", 2: "lesion"})

    local = Predictor.from_folder(model, tta=False).predict(read_dicom_series(tmp_path / "series"))
    assert fetched.array.shape == local.array.shape == (1, *volume.shape)
    assert len(np.unique(local.array)) > 1  # the comparison is not of two empty maps
    np.testing.assert_array_equal(fetched.array, local.array)
    np.testing.assert_allclose(fetched.origin, local.origin, atol=1e-4)
    np.testing.assert_allclose(fetched.spacing, local.spacing, atol=1e-4)


def test_wrong_password_is_one_line_and_stores_nothing(orthanc, model: Path, tmp_path: Path):
    volume, spacing, origin = brats_crop(slices=4, size=16)
    study_uid = generate_uid()
    upload(orthanc, write_mr_series(tmp_path / "s", volume, spacing, origin, study_uid=study_uid,
                                    series_uid=generate_uid()))
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not-the-password")
    result = CliRunner().invoke(app, ["predict", "--dicomweb", orthanc.dicomweb_url, "--study", study_uid, "-m",
                                      str(model), "--username", orthanc.username, "--password-file", str(wrong)])
    assert result.exit_code == 2
    assert "HTTP 401" in result.output and "check the username/password" in result.output
    assert "Traceback" not in result.output
    assert segmentations(orthanc, study_uid) == []


def test_a_server_that_does_not_answer_or_a_wrong_root_is_one_line(orthanc, model: Path, tmp_path: Path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/dicom-web"
    for url, message in ((closed, "no answer from the server"), (orthanc.url + "/not-dicom-web", "HTTP 404")):
        result = CliRunner().invoke(app, ["predict", "--dicomweb", url, "--study", "1.2.3", "-m", str(model),
                                          *credentials(orthanc, tmp_path)])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_a_study_with_two_image_series_needs_series(orthanc, model: Path, tmp_path: Path):
    volume, spacing, origin = brats_crop(slices=4, size=16)
    study_uid, first, second = generate_uid(), generate_uid(), generate_uid()
    for uid, name in ((first, "FLAIR"), (second, "T1c")):
        upload(orthanc, write_mr_series(tmp_path / name, volume, spacing, origin, study_uid=study_uid,
                                        series_uid=uid, description=name))
    command = ["predict", "--dicomweb", orthanc.dicomweb_url, "--study", study_uid, "-m", str(model), "--no-tta",
               *credentials(orthanc, tmp_path)]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2 and "pass --series" in result.output and first in result.output
    result = CliRunner().invoke(app, [*command, "--series", second])
    assert result.exit_code == 0, result.output
    (seg,) = segmentations(orthanc, study_uid)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == second
