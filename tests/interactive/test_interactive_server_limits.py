"""The interactive server against hostile input: decompression bombs refused from their header (413) with the real
server's memory bounded, NUL bytes and other malformed requests answered 4xx (never 500), reads that do not wait
for a running prompt; and ``read_header`` agreeing with ``read_image`` for every format."""

from __future__ import annotations

import gzip
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from medseg.errors import MedsegError
from medseg.interactive.baselines import create_baseline
from medseg.io import Image, read_header, read_image, voxel_count, write_image
from medseg.serve.interactive_app import create_app

TOKEN = "limits-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# --- files that declare more than they hold -------------------------------------------------------------------

def png_bomb(path: Path, width: int, height: int, rows: int | None = None) -> Path:
    """A grey PNG of ``width x height`` zeros, a few hundred KB (zlib of zero rows); valid unless ``rows`` cuts
    its data short."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(1)
    row = bytes(width + 1)  # filter byte 0, then the pixels
    idat = b"".join(compressor.compress(row) for _ in range(height if rows is None else rows)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def tiff_bomb(path: Path, tiles: int = 12, tile: int = 1024) -> Path:
    """A tiled zlib TIFF of ``(tiles * tile)^2`` zeros (12288^2: 151 M pixels in 150 KB)."""
    import tifffile

    zeros = np.zeros((tile, tile), np.uint8)
    tifffile.imwrite(path, (zeros for _ in range(tiles * tiles)), shape=(tiles * tile, tiles * tile),
                     dtype="uint8", tile=(tile, tile), compression="zlib")
    return path


def nifti_bomb(path: Path, dims: tuple[int, int, int] = (2000, 2000, 1000)) -> Path:
    """A .nii.gz whose header declares ``dims`` uint8 voxels (4 G) followed by 1 MB of them."""
    small = write_image(Image.from_array(np.zeros((2, 2, 2), np.uint8)), path.with_name("small.nii"))
    header = bytearray(small.read_bytes()[:352])
    struct.pack_into("<4h", header, 40, 3, *dims)
    path.write_bytes(gzip.compress(bytes(header) + bytes(2**20), compresslevel=1))
    return path


# --- the real server in a subprocess --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory_kb(pid: int, field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak so far) of a process, from ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.fixture
def server(tmp_path):
    """``medseg interactive`` (random walker) on 127.0.0.1, images over 4 M values refused."""
    import httpx

    if not Path("/proc/self/status").exists():
        pytest.skip("reads the server's memory from /proc (Linux)")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "medseg", "interactive", "--baseline", "random_walker",
                                "--port", str(port), "--token", TOKEN, "--allow-root", str(tmp_path),
                                "--max-image-voxels", str(2**22)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=60)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read()
            try:
                if client.get("/api/images").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        yield client, process
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=30)


def upload(client, path: Path):
    with open(path, "rb") as stream:
        return client.post("/api/images", files={"file": (path.name, stream)})


def test_decompression_bombs_get_413_and_the_server_memory_stays_bounded(server, tmp_path):
    client, process = server
    for suffix in (".nii.gz", ".tif", ".png"):  # the first upload of each format pays for its imports
        small = write_image(Image.from_array(np.full((64, 80), 7, np.uint8)), tmp_path / f"small{suffix}")
        assert upload(client, small).status_code == 200
    peak_before = memory_kb(process.pid, "VmHWM")

    bombs = [png_bomb(tmp_path / "bomb.png", 8000, 8000),  # 64 M pixels in ~64 KB, decodable
             tiff_bomb(tmp_path / "bomb.tif"),  # 151 M pixels in 150 KB
             nifti_bomb(tmp_path / "bomb.nii.gz")]  # declares 4 G voxels
    for bomb in bombs:
        assert bomb.stat().st_size < 2**21
        response = upload(client, bomb)
        assert response.status_code == 413, response.text
        body = response.json()
        assert body["max_image_voxels"] == 2**22
        assert bomb.name in body["detail"] and "4,194,304" in body["detail"]
        assert "--max-image-voxels" in body["detail"] and "medseg-upload" not in body["detail"]
        opened = client.post("/api/images/open", json={"path": str(bomb)})  # by path: the same refusal
        assert opened.status_code == 413 and str(bomb) in opened.json()["detail"]

    growth_mb = (memory_kb(process.pid, "VmHWM") - peak_before) / 1024
    assert growth_mb < 40, f"the server's peak memory grew by {growth_mb:.0f} MB"  # the PNG alone decodes to 64 MB
    assert process.poll() is None
    assert len(client.get("/api/images").json()) == 3
    assert upload(client, small).status_code == 200


def test_pillow_decompression_bomb_is_a_4xx_above_the_servers_own_limit(tmp_path):
    """With the server's limit raised past Pillow's, Pillow's DecompressionBombError is a 400, not a 500."""
    client = TestClient(create_app(create_baseline("random_walker"), token=TOKEN, max_image_voxels=10**10),
                        headers=AUTH)
    bomb = png_bomb(tmp_path / "huge.png", 15000, 15000)  # 225 M pixels > Pillow's 179 M
    response = upload(client, bomb)
    assert 400 <= response.status_code < 500 and "huge.png" in response.json()["detail"]
    assert "decompression bomb" in response.json()["detail"]


def test_the_header_limit_holds_at_start_and_on_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from medseg.cli.app import app

    bomb = png_bomb(tmp_path / "scan.png", 3000, 3000)
    with pytest.raises(MedsegError, match=r"scan\.png.*9,000,000 values.*limit of 1,000,000"):
        create_app(create_baseline("random_walker"), token=TOKEN, image=bomb, max_image_voxels=10**6)
    result = CliRunner().invoke(app, ["interactive", "--baseline", "random_walker", "--image", str(bomb),
                                      "--max-image-voxels", "1000000"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "scan.png" in result.output and "--max-image-voxels" in result.output
    zero = CliRunner().invoke(app, ["interactive", "--baseline", "random_walker", "--max-image-voxels", "0"])
    assert zero.exit_code == 2 and "--max-image-voxels 0" in zero.output


# --- hostile requests: 4xx, never 500 --------------------------------------------------------------------------

@pytest.fixture
def served(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    app = create_app(create_baseline("random_walker"), token=TOKEN, allowed_roots=[root], max_upload_bytes=2**20)
    client = TestClient(app, raise_server_exceptions=False)
    image = np.where(np.hypot(*np.indices((40, 48)) - np.array([20, 24])[:, None, None]) < 9, 200, 30)
    write_image(Image.from_array(image.astype(np.uint8)), root / "disc.png")
    (root / "afile").write_text("not a folder")
    info = client.post("/api/images/open", headers=AUTH, json={"path": str(root / "disc.png")}).json()
    return client, root, info["id"]


HOSTILE = {  # name -> (method, path (with {id} and {root}), body, expected status, words in the detail)
    "nul byte in open": ("post", "/api/images/open", {"path": "{root}/disc\x00.png"}, 400, "NUL"),
    "nul byte in save": ("post", "/api/images/{id}/save", {"path": "{root}/m\x00ask.png"}, 400, "NUL"),
    "path too long": ("post", "/api/images/open", {"path": "{root}/" + "a" * 5000}, 400, "characters"),
    "name too long": ("post", "/api/images/open", {"path": "{root}/" + "a" * 300 + ".png"}, 400, ""),
    "missing file": ("post", "/api/images/open", {"path": "{root}/nothere.png"}, 400, "not found"),
    "folder of no DICOM": ("post", "/api/images/open", {"path": "{root}"}, 400, "DICOM"),
    "path not a string": ("post", "/api/images/open", {"path": 5}, 422, ""),
    "not JSON": ("post", "/api/images/open", b"{not json", 422, ""),
    "JSON list": ("post", "/api/images/{id}/prompts", [1, 2], 422, ""),
    "wrong types": ("post", "/api/images/{id}/prompts", {"type": "click", "point": ["a", "b"]}, 422, ""),
    "point of 3 values": ("post", "/api/images/{id}/prompts", {"type": "click", "point": [1, 2, 3]}, 422, ""),
    "negative slice": ("post", "/api/images/{id}/prompts", {"slice": -1, "type": "click", "point": [5, 5]},
                       400, "slice -1"),
    "huge slice": ("post", "/api/images/{id}/prompts", {"slice": 10**30, "type": "click", "point": [5, 5]},
                   400, "does not exist"),
    "huge coordinates": ("post", "/api/images/{id}/prompts", {"type": "click", "point": [1e308, -1e308]},
                         400, "outside"),
    "NaN coordinate": ("post", "/api/images/{id}/prompts", b'{"type": "click", "point": [NaN, 3]}', 400,
                       "outside"),
    "infinite box": ("post", "/api/images/{id}/prompts", b'{"type": "box", "start": [0, 0], "stop": '
                     b'[Infinity, 3]}', 400, "outside"),
    "too many scribble points": ("post", "/api/images/{id}/prompts",
                                 {"type": "scribble", "points": [[1, 1]] * 20_001}, 422, ""),
    "body over the JSON limit": ("post", "/api/images/{id}/prompts", b"[" + b"1," * 2_500_000 + b"1]", 413,
                                 "not an upload"),
    "negative slice png": ("get", "/api/images/{id}/slices/-3/image.png", None, 400, "slice -3"),
    "huge slice mask": ("get", "/api/images/{id}/slices/99999999999999999999/mask", None, 400, "does not exist"),
    "slice not a number": ("get", "/api/images/{id}/slices/x/mask", None, 422, ""),
    "unknown id": ("get", "/api/images/" + "f" * 500, None, 404, "no open image"),
    "unknown id prompt": ("post", "/api/images/nope/prompts", {"type": "click", "point": [1, 1]}, 404, ""),
    "undo on a bad slice": ("post", "/api/images/{id}/undo", {"slice": 7}, 400, "slice 7"),
    "propagate a 2D image": ("post", "/api/images/{id}/propagate", {"slice": 0, "max_distance": -5}, 400, ""),
    "save under a file": ("post", "/api/images/{id}/save", {"path": "{root}/afile/mask.png"}, 400,
                          "cannot write"),
    "save unknown suffix": ("post", "/api/images/{id}/save", {"path": "{root}/mask.exe"}, 400, "unknown"),
    "download .mhd": ("get", "/api/images/{id}/mask-file?suffix=.mhd", None, 400, "unknown mask format"),
    "download odd suffix": ("get", "/api/images/{id}/mask-file?suffix=%00.png", None, 400, "unknown"),
    "upload no file": ("post", "/api/images", b"", 400, "no file"),
    "upload bad multipart": ("post-multipart", "/api/images", b"--x\r\ngarbage", 400, ""),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_requests_are_4xx_with_a_message(served, name):
    client, root, image_id = served
    method, path, body, status, words = HOSTILE[name]
    path = path.replace("{id}", image_id)
    if isinstance(body, dict):
        body = {k: v.replace("{root}", str(root)) if isinstance(v, str) else v for k, v in body.items()}
    headers = dict(AUTH)
    if method == "post-multipart":
        headers["content-type"] = "multipart/form-data; boundary=x"
        response = client.post(path, headers=headers, content=body)
    elif method == "post" and isinstance(body, bytes):
        headers["content-type"] = "application/json"
        response = client.post(path, headers=headers, content=body)
    elif method == "post":
        response = client.post(path, headers=headers, json=body)
    else:
        response = client.get(path, headers=headers)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"] if words else response.json()["detail"]
    assert client.get(f"/api/images/{image_id}", headers=AUTH).status_code == 200  # still serving


def test_symlink_loop_is_a_400(served):
    client, root, _ = served
    (root / "loop").symlink_to(root / "loop")
    response = client.post("/api/images/open", headers=AUTH, json={"path": str(root / "loop")})
    assert response.status_code in (400, 403), response.text


# --- concurrency ----------------------------------------------------------------------------------------------

class GatedSegmenter:
    """The random walker, whose ``predict`` waits until ``release`` is set (a prompt that takes long)."""

    name = "gated"

    def __init__(self):
        self.inner = create_baseline("random_walker")
        self.entered, self.release = threading.Event(), threading.Event()

    def embed(self, image):
        return self.inner.embed(image)

    def predict(self, embedding, prompts, previous=None):
        self.entered.set()
        assert self.release.wait(30)
        return self.inner.predict(embedding, prompts, previous)


def test_slice_pictures_and_masks_do_not_wait_for_a_running_prompt(tmp_path, ellipsoid_scan):
    segmenter = GatedSegmenter()
    client = TestClient(create_app(segmenter, token=TOKEN, image=ellipsoid_scan.path))
    image_id = client.get("/api/images", headers=AUTH).json()[0]["id"]
    api = f"/api/images/{image_id}"
    row, col = ellipsoid_scan.centre
    answers = []
    prompt = threading.Thread(target=lambda: answers.append(client.post(
        f"{api}/prompts", headers=AUTH, json={"slice": 10, "type": "click", "point": [row, col]})))
    prompt.start()
    try:
        assert segmenter.entered.wait(30)  # the model is running, holding the image's lock
        start = time.perf_counter()
        picture = client.get(f"{api}/slices/10/image.png", headers=AUTH)
        mask = client.get(f"{api}/slices/10/mask", headers=AUTH)
        elapsed = time.perf_counter() - start
        assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")
        assert mask.status_code == 200 and mask.json()["area"] == 0 and mask.json()["prompts"] == []
        assert elapsed < 10 and prompt.is_alive()  # answered while the prompt was still waiting
    finally:
        segmenter.release.set()
        prompt.join(30)
    assert answers[0].status_code == 200 and answers[0].json()["area"] > 0
    after = client.get(f"{api}/slices/10/mask", headers=AUTH).json()  # the committed state is published
    assert after["area"] == answers[0].json()["area"] and after["mask"] == answers[0].json()["mask"]
    assert len(after["prompts"]) == 1


def test_at_most_two_slice_pictures_render_at_once(monkeypatch, ellipsoid_scan):
    from medseg.interactive.session import InteractiveSession

    running, most = [0], [0]
    lock = threading.Lock()
    display = InteractiveSession.display_slice

    def slow_display(self, index):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return display(self, index)

    monkeypatch.setattr(InteractiveSession, "display_slice", slow_display)
    client = TestClient(create_app(create_baseline("random_walker"), token=TOKEN, image=ellipsoid_scan.path),
                        headers=AUTH)
    api = f"/api/images/{client.get('/api/images').json()[0]['id']}"
    codes = []
    threads = [threading.Thread(target=lambda k=k: codes.append(client.get(f"{api}/slices/{k}/image.png")
                                                               .status_code)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert codes == [200] * 8 and most[0] == 2  # several at once, never more than two


def test_slice_pictures_wait_briefly_for_running_prompts():
    from medseg.serve.store import ModelFirst

    gate = ModelFirst(patience=0.3)
    start = time.perf_counter()
    gate.wait_turn()  # no prompt running: at once
    assert time.perf_counter() - start < 0.1
    with gate.model():
        start = time.perf_counter()
        gate.wait_turn()  # a prompt that does not end: the picture goes ahead after the patience
        assert 0.25 < time.perf_counter() - start < 5
    gate = ModelFirst(patience=30)
    done = threading.Event()

    def prompt():
        with gate.model():
            done.wait(10)

    runner = threading.Thread(target=prompt)
    runner.start()
    time.sleep(0.05)
    threading.Timer(0.1, done.set).start()
    start = time.perf_counter()
    gate.wait_turn()  # released when the prompt ends, long before the patience
    assert 0.03 < time.perf_counter() - start < 5
    runner.join(10)


def test_open_images_are_closed_oldest_first_beyond_the_memory_budget(tmp_path):
    """The images kept open hold at most 8 x max_image_voxels bytes together (160 KB here), beside the newest."""
    client = TestClient(create_app(create_baseline("random_walker"), token=TOKEN, max_image_voxels=20_000),
                        headers=AUTH)
    rng = np.random.default_rng(0)
    names = []
    for k, dtype in enumerate([np.float32] * 3 + [np.float64]):  # 43 KB each, then 86 KB
        path = write_image(Image.from_array(rng.normal(size=(3, 60, 60)).astype(dtype)), tmp_path / f"s{k}.nii.gz")
        names.append(upload(client, path).json()["name"])
        if k == 2:
            assert [i["name"] for i in client.get("/api/images").json()] == names  # 130 KB: all kept
    assert [i["name"] for i in client.get("/api/images").json()] == names[2:]  # 216 KB -> 130 KB


# --- the header reader --------------------------------------------------------------------------------------

def _write(path: Path, image: Image) -> Path:
    return write_image(image, path)


def _pil(path: Path, mode: str) -> Path:
    from PIL import Image as PILImage

    pixels = np.random.default_rng(3).integers(0, 255, (9, 11)).astype(np.uint8)
    PILImage.fromarray(pixels).convert(mode).save(path)
    return path


def _tiff(path: Path, array: np.ndarray, **options) -> Path:
    import tifffile

    tifffile.imwrite(path, array, **options)
    return path


def _npz_single(path: Path) -> Path:
    np.savez(path, np.zeros((9, 11), np.float32))
    return path


RNG = np.random.default_rng(0)
FILES = {
    "3d.nii.gz": lambda p: _write(p, Image.from_array(RNG.normal(size=(5, 9, 11)).astype(np.float32))),
    "2d.nii": lambda p: _write(p, Image.from_array(RNG.integers(0, 9, (9, 11)).astype(np.int16))),
    "4d.nii.gz": lambda p: _write(p, Image.from_array(RNG.normal(size=(2, 5, 9, 11)).astype(np.float32),
                                                      channel_axis=True)),
    "rgb.nrrd": lambda p: _write(p, Image.from_array(RNG.integers(0, 255, (3, 9, 11)).astype(np.uint8),
                                                     channel_axis=True)),
    "3d.mha": lambda p: _write(p, Image.from_array(RNG.integers(0, 255, (4, 9, 11)).astype(np.uint16))),
    "rgb.png": lambda p: _write(p, Image.from_array(RNG.integers(0, 255, (3, 9, 11)).astype(np.uint8),
                                                    channel_axis=True)),
    "16bit.png": lambda p: _write(p, Image.from_array(RNG.integers(0, 60000, (9, 11)).astype(np.uint16))),
    "palette.png": lambda p: _pil(p, "P"),
    "grey_alpha.png": lambda p: _pil(p, "LA"),
    "rgba.png": lambda p: _pil(p, "RGBA"),
    "1bit.png": lambda p: _pil(p, "1"),
    "grey.jpg": lambda p: _pil(p, "L"),
    "cmyk.jpg": lambda p: _pil(p, "CMYK"),
    "rgb.bmp": lambda p: _pil(p, "RGB"),
    "medseg.tif": lambda p: _write(p, Image.from_array(RNG.normal(size=(2, 5, 9, 11)).astype(np.float32),
                                                       channel_axis=True)),
    "stack.tif": lambda p: _tiff(p, RNG.integers(0, 255, (4, 9, 11)).astype(np.uint8)),
    "rgb.tif": lambda p: _tiff(p, RNG.integers(0, 255, (9, 11, 3)).astype(np.uint8), photometric="rgb"),
    "tiled.tiff": lambda p: _tiff(p, RNG.integers(0, 255, (40, 48)).astype(np.uint16), tile=(16, 16),
                                  compression="zlib"),
    "3d.npy": lambda p: _write(p, Image.from_array(RNG.normal(size=(5, 9, 11)))),
    "medseg.npz": lambda p: _write(p, Image.from_array(RNG.normal(size=(2, 9, 11)), channel_axis=True)),
    "single.npz": _npz_single,
}


@pytest.mark.parametrize("name", list(FILES))
def test_header_agrees_with_the_decoded_image(tmp_path, name):
    path = FILES[name](tmp_path / name)
    header, image = read_header(path), read_image(path)
    assert header.shape == image.array.shape and header.dtype == image.array.dtype.name
    if name != "medseg.npz":  # also counts the geometry members it loads
        assert voxel_count(path) == image.array.size == header.values
    else:
        assert header.values > image.array.size


def test_header_of_a_dicom_series_folder(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    series, study = generate_uid(), generate_uid()
    for z in range(4):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "CT", "p", study, series
        ds.InstanceNumber, ds.ImagePositionPatient = z + 1, [0, 0, 2.0 * z]
        ds.ImageOrientationPatient, ds.PixelSpacing, ds.SliceThickness = [1, 0, 0, 0, 1, 0], [0.5, 0.5], 2.0
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 9, 11, 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 1
        ds.PixelData = np.full((9, 11), z, np.int16).tobytes()
        ds.save_as(tmp_path / f"IM{z}.dcm", enforce_file_format=True)
    header, image = read_header(tmp_path), read_image(tmp_path)
    assert header.shape == image.array.shape == (1, 4, 9, 11)


def test_bombs_are_sized_from_the_header_without_decoding(tmp_path):
    start = time.perf_counter()
    assert read_header(png_bomb(tmp_path / "b.png", 30000, 100)).shape == (1, 100, 30000)
    assert read_header(tiff_bomb(tmp_path / "b.tif")).shape == (1, 12288, 12288)
    assert read_header(nifti_bomb(tmp_path / "b.nii.gz")).shape == (1, 1000, 2000, 2000)
    huge = png_bomb(tmp_path / "huge.png", 100_000, 100_000, rows=1)  # Pillow's own open refuses this one
    assert voxel_count(huge) == 10**10
    assert time.perf_counter() - start < 20
    with pytest.raises(MedsegError, match=r"broken\.png.*corrupt or truncated"):
        read_header(_broken(tmp_path / "broken.png"))


def _broken(path: Path) -> Path:
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    return path

