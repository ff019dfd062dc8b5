"""Jobs survive the server: a real ``medseg serve`` on 127.0.0.1 killed with SIGKILL mid-job and started again
finishes every job it had accepted (or reports it failed with the reason), and the job store's recovery rules."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from medseg.inference.predictor import Predictor
from medseg.io import read_image, write_image
from medseg.serve.jobs import Job, JobStore
from tests.serve.conftest import auth, small_volume


def test_recovery_requeues_interrupted_jobs_then_fails_them_with_the_reason(tmp_path):
    store = JobStore(tmp_path)
    first = Job(model="m", caller="lab", source="path", input_path="/x.nii.gz", input_name="x.nii.gz",
                result_suffix=".nii.gz")
    second = Job(model="m", caller="lab", source="path", input_path="/y.nii.gz", input_name="y.nii.gz",
                 result_suffix=".nii.gz")
    for job in (first, second):
        store.add(job, max_queued=8)
    store.update(first.id, status="running", attempts=1)
    store.update(second.id, status="running", attempts=2)
    store.close()
    reopened = JobStore(tmp_path)  # as a restarted server does
    assert reopened.recover(max_attempts=2) == ([first.id], [second.id])
    assert reopened.get(first.id).status == "queued"
    failed = reopened.get(second.id)
    assert failed.status == "failed" and "server stopped while this job ran, 2 time(s)" in failed.error
    assert reopened.ids("running") == []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: Path, tokens: Path, state: Path, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "medseg", "serve", str(model), "--host", "127.0.0.1", "--port", str(port),
               "--tokens", str(tokens), "--state", str(state), "--workers", "1", "--queue", "8"]
    process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"medseg serve exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError("medseg serve did not become ready in 120 s")


@pytest.mark.slow
def test_kill_9_mid_job_and_restart_loses_no_job(trained_model, tokens_file, tmp_path):
    images = [small_volume(seed=s, shape=(12, 64, 64)) for s in range(2)]
    files = [write_image(image, tmp_path / f"case_{i}.nii.gz") for i, image in enumerate(images)]
    state, port = tmp_path / "state", free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(trained_model, tokens_file, state, port)
    try:
        ids = []
        for path in files:
            response = httpx.post(f"{base}/v1/jobs", headers=auth(), timeout=30,
                                  files={"file": (path.name, path.read_bytes())})
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        deadline, running = time.time() + 120, None
        while running is None and time.time() < deadline:
            statuses = {i: httpx.get(f"{base}/v1/jobs/{i}", headers=auth(), timeout=10).json() for i in ids}
            running = next((i for i, s in statuses.items() if s["status"] == "running" and s["stage"] ==
                            "predicting"), None)
            time.sleep(0.02)
        assert running is not None, statuses
        server.send_signal(signal.SIGKILL)
        server.wait(30)
    finally:
        if server.poll() is None:
            server.kill()
    server = start_server(trained_model, tokens_file, state, port)
    try:
        deadline, finished = time.time() + 300, {}
        while len(finished) < len(ids) and time.time() < deadline:
            for i in ids:
                info = httpx.get(f"{base}/v1/jobs/{i}", headers=auth(), timeout=10).json()
                if info["status"] in ("done", "failed"):
                    finished[i] = info
            time.sleep(0.2)
        assert len(finished) == len(ids), "a job was lost or never finished after the restart"
        assert finished[running]["attempts"] == 2  # it was interrupted once and ran again
        predictor = Predictor.from_folder(trained_model)
        for job_id, image in zip(ids, images):
            assert finished[job_id]["status"] == "done", finished[job_id]
            result = httpx.get(f"{base}/v1/jobs/{job_id}/result", headers=auth(), timeout=30)
            assert result.status_code == 200
            (tmp_path / "got.nii.gz").write_bytes(result.content)
            np.testing.assert_array_equal(read_image(tmp_path / "got.nii.gz").array, predictor.predict(image).array)
        assert list((state / "uploads").iterdir()) == []
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
