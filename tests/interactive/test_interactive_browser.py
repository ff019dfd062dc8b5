"""The interactive page in a real browser: headless Debian Chromium driven by selenium against the real server
(uvicorn on a free port) with the random-walker baseline. Open an image, click on the object, see the mask
appear, add a background click and undo it, save, and check the saved file. Fails, never skips, when
chromium or chromedriver is missing (CI's .ci/run installs them)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from medseg.interactive.baselines import create_baseline
from medseg.io import Image, read_image, write_image
from medseg.serve.encoding import rle_mask
from medseg.serve.interactive_app import create_app
from tests.browser_support import click_pixel, serve_in_thread, wait_for

pytestmark = pytest.mark.slow

TOKEN = "browser-test-token"
CVC = Path(__file__).resolve().parents[3] / "shared" / "data" / "cvc_clinicdb"


@pytest.fixture
def server(tmp_path):
    """The app on 127.0.0.1 at a free port, in a thread; yields the base URL."""
    base, stop = serve_in_thread(create_app(create_baseline("random_walker"), token=TOKEN, allowed_roots=[tmp_path]))
    yield base
    stop()


def polyp_image(tmp_path: Path) -> tuple[Path, tuple[int, int]]:
    """A CVC-ClinicDB image (read in place) and the deepest point of its polyp; a synthetic disc when the shared
    data are not there."""
    from scipy.ndimage import distance_transform_edt

    image_path = CVC / "imagesTr" / "cvc_clinicdb_0000_0000.png"
    if image_path.is_file():
        label = read_image(CVC / "labelsTr" / "cvc_clinicdb_0000.png").array[0] > 0
    else:
        rows, cols = np.indices((200, 240))
        label = (rows - 90) ** 2 + (cols - 130) ** 2 <= 35 ** 2
        image_path = tmp_path / "disc.png"
        write_image(Image.from_array(np.stack([np.where(label, 190, 60).astype(np.uint8)] * 3), channel_axis=True),
                    image_path)
    depth = distance_transform_edt(label)
    return image_path, tuple(int(v) for v in np.unravel_index(np.argmax(depth), depth.shape))


def test_open_click_undo_save_in_a_real_browser(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    image_path, (row, col) = polyp_image(tmp_path)
    source = read_image(image_path)
    browser.get(f"{server}/?token={TOKEN}")  # sets the cookie, redirects to /
    assert browser.current_url.rstrip("/") == server and "medseg interactive" in browser.title
    browser.find_element(By.ID, "file").send_keys(str(image_path))
    wait_for(browser, "return window.medseg.picture !== null && !window.medseg.busy")
    info = browser.execute_script("return window.medseg.image")
    assert info["slice_shape"] == list(source.spatial_shape) and info["name"] == image_path.name

    canvas = browser.find_element(By.ID, "canvas")
    click_pixel(browser, canvas, row, col)
    wait_for(browser, "return document.getElementById('status').dataset.interactions === '1' && "
                      "!window.medseg.busy")
    status = browser.find_element(By.ID, "status")
    assert "ms" in status.text and status.get_attribute("class") != "error", status.text
    area = int(status.get_attribute("data-area"))
    assert area > 0

    api = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {TOKEN}"})
    shown = rle_mask(api.get(f"/api/images/{info['id']}/slices/0/mask").json()["mask"])
    assert shown[row, col] and shown.sum() == area
    # the overlay is drawn: a masked pixel away from the click marker is tinted red compared with the slice
    distance = np.hypot(*(np.indices(shown.shape) - np.array([row, col])[:, None, None]))
    rows, cols = np.nonzero(shown & (distance >= 10))
    assert rows.size, "the mask should reach 10 pixels from the click"
    tinted = browser.execute_script(
        "const p = arguments[0].getContext('2d').getImageData(arguments[2], arguments[1], 1, 1).data;"
        "return [p[0], p[1], p[2]];", canvas, int(rows[0]), int(cols[0]))
    picture = source.array[:3, rows[0], cols[0]].astype(int)
    assert tinted[0] - tinted[1] > picture[0] - picture[1], (tinted, picture)

    corner = (5, 5) if not shown[5, 5] else (source.spatial_shape[0] - 5, source.spatial_shape[1] - 5)
    click_pixel(browser, canvas, *corner, right=True)  # a background click
    wait_for(browser, "return document.getElementById('status').dataset.interactions === '2' && "
                      "!window.medseg.busy")
    assert [p["positive"] for p in browser.execute_script("return window.medseg.prompts")] == [True, False]
    browser.find_element(By.ID, "undo").click()
    wait_for(browser, "return window.medseg.prompts.length === 1 && !window.medseg.busy")
    assert int(status.get_attribute("data-area")) == area

    output = tmp_path / "saved" / "polyp_mask.png"
    browser.find_element(By.ID, "save-path").send_keys(str(output))
    browser.find_element(By.ID, "save-path-button").click()
    wait_for(browser, "return document.getElementById('status').textContent.startsWith('saved')")
    saved = read_image(output)
    assert saved.spatial_shape == source.spatial_shape and saved.same_grid(source) and saved.num_channels == 1
    np.testing.assert_array_equal(saved.array[0].astype(bool), shown)
    assert saved.array[0, row - 3:row + 4, col - 3:col + 4].all()

    browser.find_element(By.ID, "download").click()
    downloaded = tmp_path / "downloads" / info["mask_name"]
    deadline = time.monotonic() + 30
    while not downloaded.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    np.testing.assert_array_equal(read_image(downloaded).array, saved.array)
