"""The annotation page in a real headless Chromium (selenium) against the real server with the random-walker
baseline, on an anisotropic NIfTI volume with two objects: window/level changes the rendered pixels as computed,
the coronal and sagittal views are drawn at the physical aspect of their spacing, two structures prompted and
saved give one label map with both values, a brush stroke changes exactly the pixels within its radius of the
stroke, undo/redo round-trip over it, and a reload of the page keeps structures and masks. The prompt -> overlay
latency the page measures is printed (bench/annotation_latency.py reports it)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from medseg.interactive.baselines import create_baseline
from medseg.interactive.edits import stroke_pixels
from medseg.io import Image, read_image, write_image
from medseg.serve.interactive_app import create_app
from tests.browser_support import click_pixel, serve_in_thread, wait_for

pytestmark = pytest.mark.slow

TOKEN = "annotation-browser-token"
SHAPE = (12, 64, 80)  # (Z, Y, X)
SPACING = (4.0, 1.0, 0.8)
CENTRES = ((6, 20, 22), (6, 42, 56))  # the two objects' centres (z, y, x)


def two_object_volume(path: Path) -> tuple[Path, Image]:
    """Noise around -100 with two bright ellipsoids (about 150), anisotropic spacing, written as NIfTI."""
    axes = np.indices(SHAPE)
    image = np.random.default_rng(0).normal(-100, 20, SHAPE)
    for centre in CENTRES:
        inside = sum(((axis - c) / r) ** 2 for axis, c, r in zip(axes, centre, (4.5, 9, 11))) <= 1
        image[inside] = 150 + np.random.default_rng(1).normal(0, 10, inside.sum())
    volume = Image.from_array(image.astype(np.float32)[None], channel_axis=True, spacing=SPACING)
    return write_image(volume, path), volume


@pytest.fixture
def page(tmp_path, browser):
    """The server (random walker) with the volume open, and the browser showing it; yields (browser, base URL,
    image, API client)."""
    path, volume = two_object_volume(tmp_path / "scan.nii.gz")
    base, stop = serve_in_thread(create_app(create_baseline("random_walker"), token=TOKEN,
                                            allowed_roots=[tmp_path], image=path))
    browser.set_window_size(1400, 900)
    browser.get(f"{base}/?token={TOKEN}")
    wait_for(browser, "return window.medseg.picture !== null && window.medseg.planes[2] !== undefined && "
                      "!window.medseg.busy")
    api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"})
    yield browser, base, volume, api
    stop()


def canvas_pixels(browser, element_id: str) -> np.ndarray:
    """``(H, W, 3)`` of a view's canvas."""
    data, height, width = browser.execute_script(
        "const c = document.getElementById(arguments[0]); const d = c.getContext('2d').getImageData(0, 0, c.width, "
        "c.height).data; return [Array.from(d), c.height, c.width];", element_id)
    return np.asarray(data, np.int32).reshape(height, width, 4)[..., :3]


def windowed(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip((values.astype(np.float64) - low) / max(high - low, 1e-8), 0, 1) * 255


def labels_on(api: httpx.Client, image_id: str, axis: int, index: int) -> np.ndarray:
    response = api.get(f"/api/images/{image_id}/planes/{axis}/{index}/labels")
    return np.frombuffer(response.content, np.uint8).reshape([int(s) for s in response.headers["x-shape"].split(",")])


def wait_interactions(browser, count: int) -> None:
    wait_for(browser, f"return document.getElementById('status').dataset.interactions === '{count}' && "
                      "!window.medseg.busy")


def test_window_level_and_the_physical_aspect_of_the_three_views(page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    browser, _, volume, _ = page
    middle = browser.execute_script("return window.medseg.slice")
    truth = volume.array[0, middle]
    for preset in (1, 2):  # the 1-99 % and 5-95 % ranges: each pixel as the window maps it
        Select(browser.find_element(By.ID, "preset")).select_by_index(preset)
        window = browser.execute_script("return window.medseg.window")
        expected = np.percentile(volume.array[0], (1, 99) if preset == 1 else (5, 95))
        np.testing.assert_allclose([window["low"], window["high"]], expected, rtol=1e-4, atol=1e-3)
        shown = canvas_pixels(browser, "canvas")
        assert np.abs(shown[..., 0] - windowed(truth, window["low"], window["high"])).max() <= 1
        assert (shown[..., 0] == shown[..., 2]).all()  # grey: nothing is overlaid yet

    before = browser.execute_script("return window.medseg.window")
    canvas = browser.find_element(By.ID, "canvas")
    (ActionChains(browser).key_down(Keys.CONTROL).move_to_element(canvas).click_and_hold()
     .move_by_offset(60, 0).move_by_offset(0, -40).release().key_up(Keys.CONTROL).perform())
    after = browser.execute_script("return window.medseg.window")
    assert after["high"] - after["low"] > before["high"] - before["low"]  # dragged right: a wider window
    assert browser.execute_script("return document.getElementById('status').dataset.interactions") == "0"
    shown = canvas_pixels(browser, "canvas")
    assert np.abs(shown[..., 0] - windowed(truth, after["low"], after["high"])).max() <= 1

    for view, (rows, cols) in {"canvas": (SHAPE[1] * SPACING[1], SHAPE[2] * SPACING[2]),
                               "view-coronal": (SHAPE[0] * SPACING[0], SHAPE[2] * SPACING[2]),
                               "view-sagittal": (SHAPE[0] * SPACING[0], SHAPE[1] * SPACING[1])}.items():
        width, height = browser.execute_script(
            "const r = document.getElementById(arguments[0]).getBoundingClientRect(); return [r.width, r.height]",
            view)
        assert height / width == pytest.approx(rows / cols, rel=0.02), view
    coronal = browser.execute_script("const c = document.getElementById('view-coronal'); return [c.height, c.width]")
    assert coronal == [SHAPE[0], SHAPE[2]]
    # the coronal view: plane y of the cursor, the last slice on top; off the crosshair, each pixel as windowed
    z, y, x = browser.execute_script("return window.medseg.cursor")
    shown = canvas_pixels(browser, "view-coronal")[..., 0]
    expected = windowed(volume.array[0, :, y, :], after["low"], after["high"])[::-1]
    off = np.ones(shown.shape, bool)
    off[SHAPE[0] - 1 - z] = False
    off[:, x] = False
    assert np.abs(shown - expected)[off].max() <= 1

    # zoom (Ctrl+wheel) and pan (middle-button drag): the view grows and moves, and a click still lands on the
    # pixel under the pointer
    width_before = browser.execute_script("return document.getElementById('canvas').getBoundingClientRect().width")
    browser.execute_script("const c = document.getElementById('canvas'); for (let i = 0; i < 3; i++) "
                           "c.dispatchEvent(new WheelEvent('wheel', {deltaY: -100, ctrlKey: true, bubbles: true,"
                           " cancelable: true}));")
    assert browser.execute_script("return window.medseg.zoom") == pytest.approx(1.15 ** 3)
    width_after = browser.execute_script("return document.getElementById('canvas').getBoundingClientRect().width")
    assert width_after == pytest.approx(width_before * 1.15 ** 3, rel=0.01)
    browser.execute_script("const c = document.getElementById('canvas');"
                           "c.dispatchEvent(new MouseEvent('mousedown', {button: 1, clientX: 400, clientY: 300, "
                           "bubbles: true})); window.dispatchEvent(new MouseEvent('mousemove', {clientX: 430, "
                           "clientY: 310})); window.dispatchEvent(new MouseEvent('mouseup', {clientX: 430, "
                           "clientY: 310}));")
    assert browser.execute_script("return window.medseg.pan") == [30, 10]
    # the zoomed view overflows its box, where selenium aims at the visible part's centre: click by coordinates
    browser.execute_script(
        "const c = document.getElementById('canvas'); const r = c.getBoundingClientRect();"
        "const x = r.left + (arguments[1] + 0.5) * r.width / c.width, y = r.top + (arguments[0] + 0.5) * r.height "
        "/ c.height; c.dispatchEvent(new MouseEvent('mousedown', {button: 0, clientX: x, clientY: y, bubbles: true}));"
        "c.dispatchEvent(new MouseEvent('mouseup', {button: 0, clientX: x, clientY: y, bubbles: true}));",
        *CENTRES[0][1:])
    wait_for(browser, "return document.getElementById('status').dataset.interactions === '1' && "
                      "!window.medseg.busy")
    point = browser.execute_script("return window.medseg.prompts[0].point")
    assert point == pytest.approx(list(CENTRES[0][1:]), abs=0.6)


def test_two_structures_a_brush_undo_redo_save_and_reload(page, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser, _, volume, api = page
    image_id = browser.execute_script("return window.medseg.image.id")
    slice_index = browser.execute_script("return window.medseg.slice")
    assert slice_index == CENTRES[0][0]
    canvas = browser.find_element(By.ID, "canvas")

    click_pixel(browser, canvas, *CENTRES[0][1:])  # structure 1, the default "object"
    wait_interactions(browser, 1)
    browser.find_element(By.ID, "new-label").send_keys("second")
    browser.find_element(By.ID, "add-label").click()
    wait_for(browser, "return window.medseg.label === 2 && !window.medseg.busy")
    click_pixel(browser, canvas, *CENTRES[1][1:])
    wait_interactions(browser, 2)
    latency = float(browser.find_element(By.ID, "status").get_attribute("data-latency"))
    print(f"prompt -> overlay {latency:.1f} ms at {SHAPE[1]}x{SHAPE[2]}")
    labels = labels_on(api, image_id, 0, slice_index)
    assert labels[CENTRES[0][1], CENTRES[0][2]] == 1 and labels[CENTRES[1][1], CENTRES[1][2]] == 2
    shown = canvas_pixels(browser, "canvas")
    first, second = shown[CENTRES[0][1], CENTRES[0][2] + 6], shown[CENTRES[1][1], CENTRES[1][2] + 6]
    assert first[0] > first[1] and second[1] > second[0]  # red for 1, green for 2 (away from the click markers)
    coronal = labels_on(api, image_id, 1, CENTRES[0][1])
    np.testing.assert_array_equal(coronal[slice_index], labels[CENTRES[0][1]])  # the other views read the same map

    # the brush (structure 2, key P): a stroke paints exactly the pixels within its radius of the stroke
    browser.find_element(By.TAG_NAME, "body").send_keys("p")
    size = browser.find_element(By.ID, "brush-size")
    size.clear()
    size.send_keys("2")  # typed into the field: not the shortcut of structure 2 ... and 1 stays selected
    browser.find_element(By.TAG_NAME, "body").send_keys("1")
    size.send_keys(Keys.BACKSPACE, "2")
    assert browser.execute_script("return window.medseg.label") == 1
    browser.find_element(By.TAG_NAME, "body").send_keys("2")
    assert browser.execute_script("return window.medseg.label") == 2
    browser.execute_script("document.activeElement.blur()")
    assert browser.execute_script("return window.medseg.tool") == "paint"
    before = labels_on(api, image_id, 0, slice_index)
    rect = browser.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height]",
                                  canvas)
    across, down = rect[0] / SHAPE[2], rect[1] / SHAPE[1]  # screen pixels per pixel (the spacing differs)
    start = (8, 60)  # (row, col), away from both objects
    offset = ((start[1] + 0.5) * across - rect[0] / 2, (start[0] + 0.5) * down - rect[1] / 2)
    actions = ActionChains(browser).move_to_element_with_offset(canvas, round(offset[0]), round(offset[1]))
    actions.click_and_hold()
    for _ in range(5):
        actions.move_by_offset(round(3 * across), round(2 * down))
    actions.release().perform()
    wait_interactions(browser, 3)
    stroke = browser.execute_script("return window.medseg.lastStroke")
    assert stroke["kind"] == "paint" and stroke["radius"] == 2 and len(stroke["points"]) >= 3
    painted = stroke_pixels(stroke["points"], stroke["radius"], SHAPE[1:])
    after = labels_on(api, image_id, 0, slice_index)
    changed = after != before
    np.testing.assert_array_equal(changed, painted & (before == 0))
    assert (after[painted] == 2).all()
    points = np.asarray(stroke["points"])
    assert abs(points[0][0] - start[0]) <= 1 and abs(points[0][1] - start[1]) <= 1
    assert points[-1][1] - points[0][1] == pytest.approx(15, abs=2)  # 5 moves of 3 pixels to the right
    assert points[-1][0] - points[0][0] == pytest.approx(10, abs=2)  # and of 2 down

    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.CONTROL, "z")
    wait_interactions(browser, 4)
    np.testing.assert_array_equal(labels_on(api, image_id, 0, slice_index), before)
    body.send_keys(Keys.CONTROL, "y")
    wait_interactions(browser, 5)
    np.testing.assert_array_equal(labels_on(api, image_id, 0, slice_index), after)

    output = tmp_path / "saved" / "scan_labels.nii.gz"
    browser.find_element(By.ID, "save-path").send_keys(str(output))
    browser.find_element(By.ID, "save-path-button").click()
    wait_for(browser, "return document.getElementById('status').textContent.startsWith('saved')")
    saved = read_image(output)
    assert saved.same_grid(volume) and set(np.unique(saved.array)) == {0, 1, 2}
    np.testing.assert_array_equal(saved.array[0, slice_index], after)
    assert not saved.array[0, [i for i in range(SHAPE[0]) if i != slice_index]].any()

    browser.refresh()  # the server kept everything; the page finds it again, on the same slice and structure
    wait_for(browser, "return window.medseg.picture !== null && window.medseg.planes[2] !== undefined && "
                      "!window.medseg.busy")
    assert browser.execute_script("return [window.medseg.slice, window.medseg.label]") == [slice_index, 2]
    assert [e["name"] for e in browser.execute_script("return window.medseg.labels")] == ["object", "second"]
    reloaded = np.asarray(browser.execute_script("return Array.from(window.medseg.planes[0].labels)"), np.uint8)
    np.testing.assert_array_equal(reloaded.reshape(SHAPE[1:]), after)
    shown = canvas_pixels(browser, "canvas")
    assert shown[CENTRES[1][1], CENTRES[1][2] + 6][1] > shown[CENTRES[1][1], CENTRES[1][2] + 6][0]
