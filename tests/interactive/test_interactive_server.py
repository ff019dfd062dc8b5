"""The interactive HTTP app through FastAPI's TestClient, with the random-walker baseline as the segmenter: the
token, uploads (PNG, 2D and 3D NIfTI), prompts, undo, saving with the image's geometry, refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient

from medseg.interactive.baselines import create_baseline
from medseg.io import Image, read_image, write_image
from medseg.serve.encoding import mask_rle, rle_mask
from medseg.serve.interactive_app import create_app

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def disc_image(shape=(48, 64), centre=(20, 30), radius=9) -> np.ndarray:
    rows, cols = np.indices(shape)
    inside = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius ** 2
    return np.where(inside, 200, 30).astype(np.uint8)


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    app = create_app(create_baseline("random_walker"), token=TOKEN, allowed_roots=[root], max_upload_bytes=2**20)
    return TestClient(app), root


def upload(client: TestClient, path) -> dict:
    with open(path, "rb") as stream:
        response = client.post("/api/images", files={"file": (path.name, stream)}, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def test_every_request_needs_the_token(served):
    client, _ = served
    for path in ("/", "/api/images", "/static/interactive.js", "/api/nothing"):
        response = client.get(path)
        assert response.status_code == 401 and "token" in response.json()["detail"]
    assert client.get("/api/images", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/api/images/open", json={"path": "/etc/passwd"}).status_code == 401
    assert client.get("/api/images", headers=AUTH).json() == []

    redirect = client.get(f"/?token={TOKEN}", follow_redirects=False)
    assert redirect.status_code == 303 and redirect.headers["location"] == "/"
    assert "httponly" in redirect.headers["set-cookie"].lower()
    page = client.get("/")  # the client keeps the cookie
    assert page.status_code == 200 and "interactive.js" in page.text
    assert client.get("/static/interactive.js").status_code == 200
    assert "cdn" not in page.text.lower() and "https://" not in client.get("/static/interactive.css").text


def test_png_click_undo_save_and_download(served, tmp_path):
    client, root = served
    source = tmp_path / "polyp.png"
    write_image(Image.from_array(np.stack([disc_image()] * 3), channel_axis=True), source)
    info = upload(client, source)
    assert info["ndim"] == 2 and info["num_slices"] == 1 and info["slice_shape"] == [48, 64]
    assert info["mask_name"] == "polyp_mask.png"
    image_id = info["id"]

    png = client.get(f"/api/images/{image_id}/slices/0/image.png", headers=AUTH)
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")
    assert client.get(f"/api/images/{image_id}/slices/0/mask", headers=AUTH).json()["area"] == 0

    click = client.post(f"/api/images/{image_id}/prompts", headers=AUTH,
                        json={"slice": 0, "type": "click", "point": [20, 30], "positive": True})
    assert click.status_code == 200, click.text
    result = click.json()
    mask = rle_mask(result["mask"])
    assert mask.shape == (48, 64) and mask[20, 30] and not mask[2, 2]
    assert abs(result["area"] - (disc_image() == 200).sum()) < 60 and result["predict_ms"] > 0
    assert result["prompts"] == [{"type": "click", "positive": True, "point": [20.0, 30.0]}]

    negative = client.post(f"/api/images/{image_id}/prompts", headers=AUTH,
                           json={"type": "scribble", "positive": False, "points": [[40, 5], [40, 60]]})
    assert negative.status_code == 200 and len(negative.json()["prompts"]) == 2
    undone = client.post(f"/api/images/{image_id}/undo", headers=AUTH, json={"slice": 0}).json()
    assert undone["area"] == result["area"] and undone["mask"] == result["mask"]

    saved = client.post(f"/api/images/{image_id}/save", headers=AUTH, json={"path": str(root / "out.png")})
    assert saved.status_code == 200, saved.text
    written = read_image(root / "out.png")
    assert written.spatial_shape == (48, 64) and written.array[0, 20, 30] == 1
    np.testing.assert_array_equal(written.array[0].astype(bool), mask)

    download = client.get(f"/api/images/{image_id}/mask-file", headers=AUTH)
    assert download.status_code == 200 and "polyp_mask.png" in download.headers["content-disposition"]
    from PIL import Image as PILImage

    np.testing.assert_array_equal(np.array(PILImage.open(io.BytesIO(download.content))).astype(bool), mask)
    assert client.post(f"/api/images/{image_id}/reset", headers=AUTH, json={"slice": 0}).json()["area"] == 0


@pytest.mark.parametrize("volume", [False, True], ids=["2d", "3d"])
def test_nifti_upload_prompt_on_a_slice_and_save_in_its_geometry(served, tmp_path, volume):
    client, root = served
    plane = disc_image((40, 36), centre=(18, 20), radius=8).astype(np.float32) * 3 - 100
    if volume:
        array = np.stack([plane * 0 - 100] * 2 + [plane] * 3)  # 5 slices, the object on slices 2-4
        geometry = dict(spacing=(2.5, 0.9, 0.8), origin=(10.0, -20.0, 4.0),
                        direction=np.array([[-1.0, 0, 0], [0, -1.0, 0], [0, 0, 1.0]]))
    else:
        array = plane
        geometry = dict(spacing=(0.9, 0.8), origin=(-20.0, 4.0), direction=np.array([[0, 1.0], [1.0, 0]]))
    image = Image.from_array(array, **geometry)
    write_image(image, tmp_path / "scan.nii.gz")
    info = upload(client, tmp_path / "scan.nii.gz")
    slice_index = 3 if volume else 0
    assert info["num_slices"] == (5 if volume else 1) and info["slice_shape"] == [40, 36]
    assert info["mask_name"] == "scan_mask.nii.gz"

    result = client.post(f"/api/images/{info['id']}/prompts", headers=AUTH,
                         json={"slice": slice_index, "type": "box", "start": [8, 10], "stop": [28, 30]}).json()
    assert result["slice"] == slice_index and rle_mask(result["mask"])[18, 20]
    if volume:
        assert client.get(f"/api/images/{info['id']}/slices/2/mask", headers=AUTH).json()["area"] == 0

    client.post(f"/api/images/{info['id']}/save", headers=AUTH, json={"path": str(root)}).raise_for_status()
    saved = read_image(root / "scan_mask.nii.gz")
    assert saved.same_grid(image) and saved.array.dtype == np.uint8
    expected = np.zeros(image.spatial_shape, bool)
    (expected[slice_index] if volume else expected)[...] = rle_mask(result["mask"])
    np.testing.assert_array_equal(saved.array[0].astype(bool), expected)


def test_bad_input_is_refused_with_a_message(served, tmp_path):
    client, root = served
    broken = client.post("/api/images", headers=AUTH, files={"file": ("broken.png", b"\x89PNG not really")})
    assert broken.status_code == 400 and "broken.png" in broken.json()["detail"]
    assert "/tmp" not in broken.json()["detail"] and "medseg-upload" not in broken.json()["detail"]
    pickled = client.post("/api/images", headers=AUTH, files={"file": ("weights.npy", b"\x93NUMPY")})
    assert pickled.status_code == 400 and "accepted image type" in pickled.json()["detail"]
    huge = client.post("/api/images", headers=AUTH, files={"file": ("big.nii", b"0" * (2**20 + 10))})
    assert huge.status_code == 413 and "limit" in huge.json()["detail"]
    chunks = (b"0" * 2**16 for _ in range(20))  # no Content-Length: the limit holds while streaming
    streamed = client.post("/api/images", headers={**AUTH, "content-type": "multipart/form-data; boundary=x"},
                           content=chunks)
    assert streamed.status_code == 413 and "limit" in streamed.json()["detail"]

    outside = tmp_path / "outside.png"
    write_image(Image.from_array(disc_image()), outside)
    refused = client.post("/api/images/open", headers=AUTH, json={"path": str(outside)})
    assert refused.status_code == 403 and "only under" in refused.json()["detail"]
    escape = client.post("/api/images/open", headers=AUTH, json={"path": str(root / ".." / "outside.png")})
    assert escape.status_code == 403
    write_image(Image.from_array(disc_image()), root / "inside.png")
    info = client.post("/api/images/open", headers=AUTH, json={"path": str(root / "inside.png")}).json()
    assert info["name"] == "inside.png"
    save_outside = client.post(f"/api/images/{info['id']}/save", headers=AUTH, json={"path": str(outside)})
    assert save_outside.status_code == 403

    prompts = f"/api/images/{info['id']}/prompts"
    no_point = client.post(prompts, headers=AUTH, json={"type": "click"})
    assert no_point.status_code == 400 and "point" in no_point.json()["detail"]
    assert client.post(prompts, headers=AUTH, json={"type": "lasso", "point": [1, 2]}).status_code == 422
    off_image = client.post(prompts, headers=AUTH, json={"type": "click", "point": [500, 2]})
    assert off_image.status_code == 400 and "outside" in off_image.json()["detail"]
    bad_slice = client.get(f"/api/images/{info['id']}/slices/3/image.png", headers=AUTH)
    assert bad_slice.status_code == 400 and "slice 3" in bad_slice.json()["detail"]
    assert client.get("/api/images/nope/slices/0/mask", headers=AUTH).status_code == 404


def test_mask_run_lengths_round_trip():
    for mask in (np.zeros((3, 4), bool), np.ones((3, 4), bool), disc_image() > 100):
        rle = mask_rle(mask)
        assert sum(rle["counts"]) == mask.size
        np.testing.assert_array_equal(rle_mask(rle), mask)
    assert mask_rle(np.array([[True, False]]))["counts"] == [0, 1, 1]


def test_cli_needs_a_model_or_a_baseline(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from medseg.cli.app import app
    from medseg.interactive import predictor

    monkeypatch.setattr(predictor, "SHIPPED", tmp_path / "no_weights")  # an install without the shipped model
    neither = CliRunner().invoke(app, ["interactive"])
    assert neither.exit_code == 2 and "no shipped promptable model" in neither.output
    assert "--baseline random_walker" in neither.output
    both = CliRunner().invoke(app, ["interactive", "--baseline", "random_walker", "--model", str(tmp_path)])
    assert both.exit_code == 2 and "not both" in both.output
    missing = CliRunner().invoke(app, ["interactive", "--baseline", "random_walker", "--image",
                                       str(tmp_path / "nope.png")])
    assert missing.exit_code == 2 and "file not found" in missing.output
    unknown = CliRunner().invoke(app, ["interactive", "--baseline", "magic"])
    assert unknown.exit_code == 2 and "unknown baseline" in unknown.output


def test_propagate_a_clicked_slice_through_a_volume_and_save_it(served, ellipsoid_scan):
    client, root = served
    scan = ellipsoid_scan
    info = upload(client, scan.path)
    api = f"/api/images/{info['id']}"
    row, col = scan.centre
    before = client.post(f"{api}/propagate", headers=AUTH, json={"slice": scan.middle})
    assert before.status_code == 400 and "no mask" in before.json()["detail"]

    clicked = client.post(f"{api}/prompts", headers=AUTH,
                          json={"slice": scan.middle, "type": "click", "point": [row, col]})
    assert clicked.status_code == 200, clicked.text
    result = client.post(f"{api}/propagate", headers=AUTH, json={"slice": scan.middle})
    assert result.status_code == 200, result.text
    body = result.json()
    assert body["slice"] == scan.middle and body["total_ms"] > 0 and body["ms_per_slice"] > 0
    assert set(range(scan.first, scan.last + 1)) - {scan.middle} <= set(body["filled"])
    neighbour = client.get(f"{api}/slices/{scan.middle + 3}/mask", headers=AUTH).json()
    truth = scan.truth[scan.middle + 3]
    mask = rle_mask(neighbour["mask"])
    assert neighbour["prompts"] == [] and 2 * (mask & truth).sum() / (mask.sum() + truth.sum()) > 0.9

    limited = client.post(f"{api}/propagate", headers=AUTH, json={"slice": scan.middle, "max_distance": 1}).json()
    assert limited["filled"] == [scan.middle - 1, scan.middle + 1]

    client.post(f"{api}/save", headers=AUTH, json={"path": str(root)}).raise_for_status()
    saved = read_image(root / "ellipsoid_mask.nii.gz")
    assert saved.same_grid(scan.image)
    volume = saved.array[0].astype(bool)
    assert 2 * (volume & scan.truth).sum() / (volume.sum() + scan.truth.sum()) > 0.85  # measured 0.96

    flat = root / "flat.png"
    write_image(Image.from_array(disc_image()), flat)
    flat_info = client.post("/api/images/open", headers=AUTH, json={"path": str(flat)}).json()
    client.post(f"/api/images/{flat_info['id']}/prompts", headers=AUTH,
                json={"type": "click", "point": [20, 30]}).raise_for_status()
    refused = client.post(f"/api/images/{flat_info['id']}/propagate", headers=AUTH, json={"slice": 0})
    assert refused.status_code == 400 and "2D" in refused.json()["detail"]
