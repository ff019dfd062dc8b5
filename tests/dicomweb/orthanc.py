"""A real Orthanc PACS for the tests: Debian's ``Orthanc`` with its DICOMweb plugin, on 127.0.0.1 at a free port,
with a throwaway configuration and storage folder, HTTP basic authentication with a generated password, and no
DICOM listener. Fails (never skips) when Orthanc is not installed."""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
INSTALL = "run scripts/install_system_packages.sh (apt-get install orthanc orthanc-dicomweb)"


@dataclass
class Orthanc:
    """A running Orthanc: ``url`` of its REST API, ``dicomweb_url`` of its DICOMweb root, the credentials."""

    url: str
    username: str
    password: str
    process: subprocess.Popen
    log: Path

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def rest(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=(self.username, self.password), timeout=30)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def orthanc_program() -> str:
    program = shutil.which("Orthanc") or shutil.which("/usr/sbin/Orthanc")
    if program is None or not DICOMWEB_PLUGIN.is_file():
        missing = "Orthanc" if program is None else f"Orthanc's DICOMweb plugin {DICOMWEB_PLUGIN}"
        pytest.fail(f"{missing} is not installed: {INSTALL}", pytrace=False)
    return program


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_orthanc(folder: Path, *, attempts: int = 3, timeout: float = 60) -> Orthanc:
    """Start Orthanc with its storage, index and log in ``folder``; returns once ``/system`` answers."""
    program = orthanc_program()
    username, password = "medseg-test", secrets.token_urlsafe(16)
    for attempt in range(attempts):  # another process may take the free port between the probe and the bind
        port = _free_port()
        run = folder / f"run{attempt}"
        run.mkdir(parents=True)
        config = {
            "Name": "medseg-test",
            "StorageDirectory": str(run / "storage"),
            "IndexDirectory": str(run / "index"),
            "HttpPort": port,
            "RemoteAccessAllowed": False,  # answers 127.0.0.1 only
            "AuthenticationEnabled": True,
            "RegisteredUsers": {username: password},
            "DicomServerEnabled": False,  # DICOMweb only: no C-STORE listener on 0.0.0.0
            "DicomPort": _free_port(),
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "SaveJobs": False,
            "HttpThreadsCount": 4,
        }
        (run / "orthanc.json").write_text(json.dumps(config, indent=2))
        log = run / "orthanc.log"
        with open(log, "wb") as stream:
            process = subprocess.Popen([program, str(run / "orthanc.json")], stdout=stream, stderr=subprocess.STDOUT,
                                       cwd=run)
        server = Orthanc(f"http://127.0.0.1:{port}", username, password, process, log)
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"{server.url}/system", auth=(username, password), timeout=2).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        server.stop()
    pytest.fail(f"Orthanc did not start; its log: {log}\n{log.read_text()[-3000:]}", pytrace=False)
