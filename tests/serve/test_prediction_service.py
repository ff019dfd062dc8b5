"""``medseg serve``'s app in process: tokens and rate limits, confinement of paths, upload limits, the bounded
queue, and a done job's label file equal to ``Predictor.predict`` of the same image."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from medseg.inference.predictor import Predictor
from medseg.io import read_image, write_image
from medseg.serve.auth import RateLimiter, read_tokens_file
from medseg.serve.limits import ImageReader
from medseg.serve.prediction_app import create_app
from medseg.serve.served_models import load_models
from tests.serve.conftest import OTHER_TOKEN, TOKEN, auth, small_volume


@pytest.fixture(scope="module")
def served(random_model):
    return load_models([random_model])


def make_app(served, tmp_path: Path, tokens_file: Path, **options):
    root = tmp_path / "root"
    root.mkdir(parents=True, exist_ok=True)
    options.setdefault("allowed_roots", [root])
    return create_app(served, tokens=read_tokens_file(tokens_file), state=tmp_path / "state", **options)


def wait_done(client: TestClient, job_id: str, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = client.get(f"/v1/jobs/{job_id}", headers=auth()).json()
        if info["status"] in ("done", "failed"):
            return info
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {info}")


def test_every_route_but_health_needs_a_valid_token(served, tmp_path, tokens_file):
    app = make_app(served, tmp_path, tokens_file)
    client = TestClient(app)
    requests = [("post", "/v1/jobs"), ("get", "/v1/jobs/abc"), ("get", "/v1/jobs/abc/result"),
                ("get", "/v1/models"), ("get", "/openapi.json")]
    for headers in ({}, auth("wrong-token-123"), {"Authorization": "Basic " + TOKEN}, auth(TOKEN[:-1])):
        for method, path in requests:
            response = getattr(client, method)(path, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.headers["www-authenticate"] == "Bearer" and "token" in response.json()["detail"]
    assert client.get("/healthz").json() == {"status": "alive", "models": 0, "workers": 0, "queued": 0,
                                             "running": 0}
    assert client.get("/v1/models", headers=auth()).status_code == 200
    assert app.state.store.count("queued") == 0


def test_a_done_job_equals_predictor_predict_upload_and_path(served, random_model, tmp_path, tokens_file):
    image = small_volume(seed=3)
    upload = write_image(image, tmp_path / "upload_case.nii.gz")
    app = make_app(served, tmp_path, tokens_file, workers=2)
    by_path = write_image(image, tmp_path / "root" / "path_case.nrrd")
    reference = Predictor.from_folder(random_model).predict(image)
    assert len(np.unique(reference.array)) >= 2  # the random model predicts more than background: a real check
    with TestClient(app) as client:
        first = client.post("/v1/jobs", headers=auth(), files={"file": ("upload_case.nii.gz", upload.read_bytes())})
        second = client.post("/v1/jobs", headers=auth(), json={"path": str(by_path), "model": "shapes_2d"})
        assert first.status_code == second.status_code == 202
        assert client.get(f"/v1/jobs/{first.json()['id']}?wait=31", headers=auth()).status_code == 422
        for response, suffix in ((first, ".nii.gz"), (second, ".nrrd")):
            info = client.get(f"/v1/jobs/{response.json()['id']}?wait=30", headers=auth()).json()  # a long poll
            assert info["status"] == "done" and info["progress"] == 1.0 and info["attempts"] == 1, info
            assert {"queued_s", "read_s", "predict_s", "write_s", "run_s"} <= set(info["timings"])
            result = client.get(f"/v1/jobs/{info['id']}/result", headers=auth())
            assert result.status_code == 200
            name = result.headers["content-disposition"].split("filename=")[1].strip('"')
            assert name.endswith(suffix)
            written = tmp_path / f"got{suffix}"
            written.write_bytes(result.content)
            labels = read_image(written)
            np.testing.assert_array_equal(labels.array, reference.array)
            np.testing.assert_allclose(labels.spacing, image.spacing)
            np.testing.assert_allclose(labels.origin, image.origin)
        for route in (f"/v1/jobs/{first.json()['id']}", f"/v1/jobs/{first.json()['id']}/result"):
            assert client.get(route, headers=auth(OTHER_TOKEN)).status_code == 404  # not this token's job
        models = client.get("/v1/models", headers=auth()).json()
        assert [m["name"] for m in models] == ["shapes_2d"]
        assert models[0]["configuration"] == "2d" and models[0]["card"]["intended_use"]
        assert [label["value"] for label in models[0]["labels"]] == reference_labels(random_model)


def reference_labels(model: Path) -> list[int]:
    return json.loads((model / "model.json").read_text())["label_values"]


@pytest.fixture
def read_spy(monkeypatch):
    """Every file the server's image reader opens (headers and pixels)."""
    seen: list[Path] = []
    original = ImageReader._named

    def spy(function, path, name):
        seen.append(Path(path))
        return original(function, path, name)

    monkeypatch.setattr(ImageReader, "_named", staticmethod(spy))
    return seen


def test_paths_outside_the_roots_are_refused_before_anything_is_read(served, tmp_path, tokens_file, read_spy):
    app = make_app(served, tmp_path, tokens_file)
    root = tmp_path / "root"
    outside = write_image(small_volume(), tmp_path / "secret.nii.gz")
    (root / "link.nii.gz").symlink_to(outside)
    (root / "series").mkdir()
    (root / "series" / "slice.dcm").symlink_to(outside)
    (root / "linked_folder").symlink_to(tmp_path)
    client = TestClient(app)
    cases = {f"{root}/../secret.nii.gz": 422, "../secret.nii.gz": 422, "root/../secret.nii.gz": 422,
             str(outside): 403, "/etc/passwd": 403, str(root / "link.nii.gz"): 403, str(root / "series"): 403,
             str(root / "linked_folder" / "secret.nii.gz"): 403, f"{root}/a\x00b.nii.gz": 422}
    for path, status in cases.items():
        response = client.post("/v1/jobs", headers=auth(), json={"path": path})
        assert response.status_code == status, (path, response.json())
        assert "fix:" in response.json()["detail"]
    assert read_spy == [] and app.state.store.count("queued") == 0
    inside = write_image(small_volume(), root / "inside.nii.gz")
    assert client.post("/v1/jobs", headers=auth(), json={"path": str(inside)}).status_code == 202
    assert read_spy == [inside]  # the header of the one allowed file, at submission


def test_oversize_uploads_get_413_and_nothing_is_kept(served, tmp_path, tokens_file, volume_file):
    app = make_app(served, tmp_path, tokens_file, max_upload_bytes=4096, max_image_voxels=10**6)
    client = TestClient(app)
    big = np.random.default_rng(0).bytes(20_000)
    response = client.post("/v1/jobs", headers=auth(), files={"file": ("big.nii.gz", big)})
    assert response.status_code == 413 and "--max-upload-mb" in response.json()["detail"]

    def chunks():  # no Content-Length: the limit holds while the body streams
        for _ in range(10):
            yield b"x" * 1000

    streamed = client.post("/v1/jobs", headers={**auth(), "content-type": "multipart/form-data; boundary=b"},
                           content=chunks())
    assert streamed.status_code == 413
    huge = write_image(small_volume(shape=(8, 400, 400)), tmp_path / "huge.nii.gz")  # 1.28e6 voxels
    small_limit = make_app(served, tmp_path / "b", tokens_file, max_image_voxels=10**6)
    declared = TestClient(small_limit).post("/v1/jobs", headers=auth(),
                                            files={"file": ("huge.nii.gz", huge.read_bytes())})
    assert declared.status_code == 413 and "1,280,000 values" in declared.json()["detail"]
    for state in (tmp_path / "state", tmp_path / "b" / "state"):
        assert list((state / "uploads").iterdir()) == [] and list((state / "results").iterdir()) == []
    assert app.state.store.count("queued") == small_limit.state.store.count("queued") == 0


def test_a_job_whose_image_cannot_be_read_fails_with_the_reason(served, tmp_path, tokens_file, volume_file):
    with TestClient(make_app(served, tmp_path, tokens_file)) as client:
        truncated = volume_file.read_bytes()[:2000]  # the header is whole, the voxels are not
        job = client.post("/v1/jobs", headers=auth(), files={"file": ("cut.nii.gz", truncated)}).json()
        info = wait_done(client, job["id"])
        assert info["status"] == "failed" and "cut.nii.gz" in info["error"] and "fix:" in info["error"]
        result = client.get(f"/v1/jobs/{job['id']}/result", headers=auth())
        assert result.status_code == 409 and info["error"] in result.json()["detail"]
        assert list((tmp_path / "state" / "uploads").iterdir()) == []  # the upload went with its job


def test_a_full_queue_answers_429_with_retry_after(served, tmp_path, tokens_file, volume_file):
    app = make_app(served, tmp_path, tokens_file, max_queued=2)
    client = TestClient(app)  # no lifespan: the workers do not start, so the jobs stay queued
    upload = {"file": ("case_a.nii.gz", volume_file.read_bytes())}
    ids = [client.post("/v1/jobs", headers=auth(), files=upload).json()["id"] for _ in range(2)]
    refused = client.post("/v1/jobs", headers=auth(), files=upload)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "queue is full" in refused.json()["detail"]
    assert sorted(p.name for p in (tmp_path / "state" / "uploads").iterdir()) == sorted(f"{i}.nii.gz" for i in ids)
    assert client.get("/readyz").status_code == 503
    queued = client.get(f"/v1/jobs/{ids[0]}/result", headers=auth())
    assert queued.status_code == 409 and "queued" in queued.json()["detail"]
    assert client.get("/v1/jobs/nope/result", headers=auth()).status_code == 404


def test_each_token_has_its_own_rate_limit(served, tmp_path, tokens_file):
    now = [1000.0]
    app = make_app(served, tmp_path, tokens_file, limiter=RateLimiter(clock=lambda: now[0]))
    client = TestClient(app)
    assert [client.get("/v1/models", headers=auth(OTHER_TOKEN)).status_code for _ in range(3)] == [200] * 3
    limited = client.get("/v1/models", headers=auth(OTHER_TOKEN))
    assert limited.status_code == 429 and limited.headers["retry-after"] == "60"
    assert all(client.get("/v1/models", headers=auth()).status_code == 200 for _ in range(10))  # unlimited token
    now[0] += 30
    assert client.get("/v1/models", headers=auth(OTHER_TOKEN)).headers["retry-after"] == "30"
    now[0] += 30
    assert client.get("/v1/models", headers=auth(OTHER_TOKEN)).status_code == 200


def test_bad_requests_are_clear_user_errors(served, tmp_path, tokens_file, volume_file):
    client = TestClient(make_app(served, tmp_path, tokens_file))
    (tmp_path / "root" / "notes.txt").write_text("hello")
    answers = {
        "not json": client.post("/v1/jobs", headers={**auth(), "content-type": "application/json"}, content=b"{"),
        "no image": client.post("/v1/jobs", headers=auth(), json={}),
        "unknown model": client.post("/v1/jobs", headers=auth(), json={"path": str(volume_file), "model": "x"}),
        "not an image": client.post("/v1/jobs", headers=auth(), json={"path": str(tmp_path / "root" / "notes.txt")}),
        "missing": client.post("/v1/jobs", headers=auth(), json={"path": str(tmp_path / "root" / "no.nii.gz")}),
        "pickle": client.post("/v1/jobs", headers=auth(), files={"file": ("x.npy", b"\x93NUMPY")}),
        "no file": client.post("/v1/jobs", headers=auth(), data={"model": "shapes_2d"}, files={"other": ("a", b"")}),
    }
    for what, response in answers.items():
        assert response.status_code == 422, (what, response.json())
        assert "fix:" in response.json()["detail"], what
    dicomweb = client.post("/v1/jobs", headers=auth(), json={"dicomweb": {"url": "http://127.0.0.1:1/x",
                                                                         "study": "1.2.3"}})
    assert dicomweb.status_code == 422 and "not configured" in dicomweb.json()["detail"]


def test_tokens_files_one_per_line_or_json(tmp_path):
    lines = tmp_path / "tokens.txt"
    lines.write_text("# the lab\nfirst-token-abc\n\nsecond-token-def\n")
    tokens = read_tokens_file(lines, default_per_minute=30)
    assert [(t.name, t.requests_per_minute) for t in tokens.tokens] == [("token1", 30), ("token2", 30)]
    assert tokens.match("second-token-def").name == "token2"
    assert tokens.match("second-token-de") is None and tokens.match("") is None
    from medseg.errors import MedsegError

    for text, message in (("short\n", "fewer than 8"), ("# nothing\n", "no token"),
                          ('{"tokens": [{"token": "long-enough-1", "requests_per_minute": -1}]}', "not a valid"),
                          ('{"tokens": [{"token": "long-enough-1"}, {"token": "long-enough-1"}]}', "share")):
        lines.write_text(text)
        with pytest.raises(MedsegError, match=message):
            read_tokens_file(lines)
