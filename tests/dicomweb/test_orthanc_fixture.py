"""The Orthanc that the DICOMweb tests start is installed by the set-up script, and its absence fails the tests
with the command that installs it (never a silent skip); a second watcher on one state file is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.errors import MedsegError
from medseg.serve.dicomweb_watch import exclusive
from tests.dicomweb import orthanc as orthanc_module

ROOT = Path(__file__).resolve().parents[2]


def test_the_setup_script_installs_orthanc_and_its_dicomweb_plugin():
    script = (ROOT / "scripts" / "install_system_packages.sh").read_text()
    assert "Orthanc|orthanc" in script and "|orthanc-dicomweb" in script
    assert str(orthanc_module.DICOMWEB_PLUGIN) in script


@pytest.mark.parametrize("missing", ["program", "plugin"])
def test_a_missing_orthanc_fails_and_names_the_install_script(monkeypatch, tmp_path, missing):
    if missing == "program":
        monkeypatch.setattr(orthanc_module.shutil, "which", lambda name: None)
    else:
        monkeypatch.setattr(orthanc_module, "DICOMWEB_PLUGIN", tmp_path / "libOrthancDicomWeb.so")
    with pytest.raises(pytest.fail.Exception, match="scripts/install_system_packages.sh"):
        orthanc_module.start_orthanc(tmp_path)


def test_a_second_watcher_on_one_state_file_is_refused(tmp_path):
    state = tmp_path / "state.json"
    with exclusive(state):
        with pytest.raises(MedsegError, match="another medseg dicomweb watch uses this state file"):
            with exclusive(state):
                pass
    with exclusive(state):  # released when the first watcher ends
        pass
