"""``medseg dicomweb watch`` against a real Orthanc: each study of the configured kind is processed once across
passes and restarts, a new study alone is processed next, a study left in progress by a kill is retried, and a
kill after the SEG was stored does not store a second one."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.inference.predictor import Predictor
from medseg.serve.dicomweb import PacsConnection
from medseg.serve.dicomweb_watch import WatchState, watch_pass
from tests.dicomweb.series import brats_crop, credentials, segmentations, upload, write_mr_series

pytestmark = pytest.mark.slow


def new_study(orthanc, folder: Path, description: str = "FLAIR") -> str:
    volume, spacing, origin = brats_crop(slices=6, size=24)
    study_uid = generate_uid()
    upload(orthanc, write_mr_series(folder / study_uid, volume, spacing, origin, study_uid=study_uid,
                                    series_uid=generate_uid(), description=description))
    return study_uid


def run_watch(orthanc, model: Path, state: Path, tmp_path: Path) -> list[str]:
    """One ``--once`` pass; returns the studies it reported done."""
    result = CliRunner().invoke(app, ["dicomweb", "watch", "--url", orthanc.dicomweb_url, "-m", str(model),
                                      "--state", str(state), "--modality", "MR", "--series-description", "^FLAIR$",
                                      "--once", "--no-tta", *credentials(orthanc, tmp_path)])
    assert result.exit_code == 0, result.output
    return sorted(line.split()[1].rstrip(":") for line in result.output.splitlines() if ": done (" in line)


class Killed(BaseException):
    """What a kill -9 leaves: the process stops in the middle, nothing after it runs."""


def test_each_study_once_across_passes_and_kills(orthanc, model: Path, tmp_path: Path, monkeypatch):
    with orthanc.rest() as rest:  # the module's other tests' studies are not part of this one
        for study in rest.get("/studies").json():
            assert rest.delete(f"/studies/{study}").status_code == 200
    state = tmp_path / "state.json"
    first, second = new_study(orthanc, tmp_path), new_study(orthanc, tmp_path)
    new_study(orthanc, tmp_path, description="T1c")  # not of the kind: never processed, never recorded
    assert run_watch(orthanc, model, state, tmp_path) == sorted([first, second])
    assert run_watch(orthanc, model, state, tmp_path) == []
    third = new_study(orthanc, tmp_path)
    assert run_watch(orthanc, model, state, tmp_path) == [third]
    recorded = json.loads(state.read_text())["studies"]
    assert sorted(recorded) == sorted([first, second, third])
    assert all(entry["status"] == "done" and entry["attempts"] == 1 for entry in recorded.values())
    for study in (first, second, third):
        (seg,) = segmentations(orthanc, study)
        assert seg.SeriesInstanceUID == recorded[study]["seg_series_uid"]

    # killed while predicting: the state says in progress, the next pass retries the study
    fourth = new_study(orthanc, tmp_path)
    predictor = Predictor.from_folder(model, tta=False)
    pacs = PacsConnection(orthanc.dicomweb_url, username=orthanc.username, password=orthanc.password)

    def killed_predict(image):
        raise Killed

    monkeypatch.setattr(predictor, "predict", killed_predict)
    with pytest.raises(Killed):
        watch_pass(pacs, predictor, WatchState(state), channels=1, label_names={1: "organ", 2: "lesion"},
                   modality="MR", descriptions=["^FLAIR$"])
    assert json.loads(state.read_text())["studies"][fourth]["status"] == "in_progress"
    assert segmentations(orthanc, fourth) == []
    assert run_watch(orthanc, model, state, tmp_path) == [fourth]
    entry = json.loads(state.read_text())["studies"][fourth]
    assert entry["status"] == "done" and entry["attempts"] == 2
    assert len(segmentations(orthanc, fourth)) == 1

    # killed after the SEG was stored but before 'done' was written: the retry finds it and stores no second SEG
    fifth = new_study(orthanc, tmp_path)
    monkeypatch.undo()
    finish = WatchState.finish

    def killed_finish(self, study_uid, status, **fields):
        if study_uid == fifth and status == "done":
            raise Killed
        return finish(self, study_uid, status, **fields)

    monkeypatch.setattr(WatchState, "finish", killed_finish)
    with pytest.raises(Killed):
        watch_pass(pacs, predictor, WatchState(state), channels=1, label_names={1: "organ", 2: "lesion"},
                   modality="MR", descriptions=["^FLAIR$"])
    monkeypatch.undo()
    assert json.loads(state.read_text())["studies"][fifth]["status"] == "in_progress"
    (stored,) = segmentations(orthanc, fifth)
    assert run_watch(orthanc, model, state, tmp_path) == [fifth]
    (again,) = segmentations(orthanc, fifth)
    assert again.SOPInstanceUID == stored.SOPInstanceUID
    assert json.loads(state.read_text())["studies"][fifth]["attempts"] == 2


def test_an_ambiguous_study_is_recorded_failed_and_not_retried(orthanc, model: Path, tmp_path: Path):
    volume, spacing, origin = brats_crop(slices=4, size=16)
    study_uid = generate_uid()
    for name in ("FLAIR", "FLAIR"):  # two series match ^FLAIR$: the watch cannot choose
        upload(orthanc, write_mr_series(tmp_path / generate_uid(), volume, spacing, origin, study_uid=study_uid,
                                        series_uid=generate_uid(), description=name))
    state = tmp_path / "state.json"
    run_watch(orthanc, model, state, tmp_path)
    entry = json.loads(state.read_text())["studies"][study_uid]
    assert entry["status"] == "failed" and "2 series" in entry["error"]
    run_watch(orthanc, model, state, tmp_path)
    assert json.loads(state.read_text())["studies"][study_uid]["attempts"] == 1
    assert segmentations(orthanc, study_uid) == []


def test_a_state_file_that_is_not_one_is_refused(orthanc, model: Path, tmp_path: Path):
    state = tmp_path / "state.json"
    state.write_text('{"studies": []}')
    result = CliRunner().invoke(app, ["dicomweb", "watch", "--url", orthanc.dicomweb_url, "-m", str(model),
                                      "--state", str(state), "--once", *credentials(orthanc, tmp_path)])
    assert result.exit_code == 2 and "not a medseg dicomweb watch state file" in result.output
    assert state.read_text() == '{"studies": []}'


def test_a_watcher_killed_mid_study_is_retried_after_restart(orthanc, model: Path, tmp_path: Path):
    """A real kill -9 of ``medseg dicomweb watch`` while it predicts; the restarted watcher finishes the study."""
    volume, spacing, origin = brats_crop(slices=24, size=64)  # retrieving + predicting takes far longer than a poll
    study_uid = generate_uid()
    upload(orthanc, write_mr_series(tmp_path / "big", volume, spacing, origin, study_uid=study_uid,
                                    series_uid=generate_uid(), description="FLAIR"))
    state = tmp_path / "state.json"
    command = [sys.executable, "-m", "medseg", "dicomweb", "watch", "--url", orthanc.dicomweb_url, "-m", str(model),
               "--state", str(state), "--series-description", "^FLAIR$", "--once", *credentials(orthanc, tmp_path)]
    watcher = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while watcher.poll() is None and time.monotonic() < deadline:
        if state.exists() and json.loads(state.read_text())["studies"].get(study_uid, {}).get("status"):
            break
        time.sleep(0.01)
    assert watcher.poll() is None, watcher.stderr.read().decode()
    watcher.send_signal(signal.SIGKILL)
    watcher.wait(timeout=30)
    assert json.loads(state.read_text())["studies"][study_uid]["status"] == "in_progress"
    assert segmentations(orthanc, study_uid) == []

    restarted = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert restarted.returncode == 0, restarted.stderr
    entry = json.loads(state.read_text())["studies"][study_uid]
    assert entry["status"] == "done" and entry["attempts"] == 2
    (seg,) = segmentations(orthanc, study_uid)
    assert seg.SeriesInstanceUID == entry["seg_series_uid"]
