"""The annotation page's interaction latency, measured in the browser: prompt (mouse up) -> overlay redrawn, on a
256x256 image in headless Chromium against the real server, for the promptable network and the random-walker
baseline; and the README's screenshot of the page on a BraTS case with two structures and the three views.

    python bench/annotation.py                       # latency -> bench/results/annotation.json
    python bench/annotation.py --model MODEL_FOLDER  # a trained promptable model instead of the default network
    python bench/annotation.py --screenshot docs/images/annotation_page.png

Without ``--model`` the promptable segmenter is the shipped model (``medseg interactive``'s default). Clicks
land at 20 seeded random points of a CVC-ClinicDB frame (its centre 256x256 crop); the first click of a slice also
embeds it and is reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "annotation.json"
TOKEN = "annotation-bench"

from tests.browser_support import click_pixel, serve_in_thread, wait_for  # noqa: E402 (after sys.path)


def chromium(width: int = 1500, height: int = 950):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from tests.conftest import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def test_image(folder: Path) -> Path:
    """The centre 256x256 crop of a CVC-ClinicDB frame, as PNG."""
    from medseg.io import read_image, write_image

    frame = read_image(DATA / "cvc_clinicdb" / "imagesTr" / "cvc_clinicdb_0000_0000.png")
    height, width = frame.spatial_shape
    top, left = (height - 256) // 2, (width - 256) // 2
    crop = frame.with_array(frame.array[:, top:top + 256, left:left + 256])
    return write_image(crop, folder / "frame_256.png")


def latency(segmenter, image: Path, clicks: int, seed: int) -> dict:
    from selenium.webdriver.common.by import By

    from medseg.serve.interactive_app import create_app

    base, stop = serve_in_thread(create_app(segmenter, token=TOKEN, image=image))
    driver = chromium()
    try:
        driver.get(f"{base}/?token={TOKEN}")
        wait_for(driver, "return window.medseg.picture !== null && !window.medseg.busy")
        canvas = driver.find_element(By.ID, "canvas")
        points = np.random.default_rng(seed).uniform(16, 240, (clicks + 1, 2))
        page, server = [], []
        for i, (row, col) in enumerate(points, start=1):
            click_pixel(driver, canvas, row, col, right=bool(i % 3 == 0))
            wait_for(driver, f"return document.getElementById('status').dataset.interactions === '{i}' && "
                         "!window.medseg.busy")
            page.append(driver.execute_script("return window.medseg.lastLatencyMs"))
            server.append(driver.execute_script("return window.medseg.lastServerMs"))
    finally:
        driver.quit()
        stop()
    later, later_server = page[1:], server[1:]  # the first click also embeds the slice
    return {"clicks": len(later), "first_click_ms": round(page[0], 1),
            "latency_ms_median": round(statistics.median(later), 1),
            "latency_ms_p90": round(float(np.percentile(later, 90)), 1),
            "latency_ms_max": round(max(later), 1),
            "server_ms_median": round(statistics.median(later_server), 1)}


def screenshot(output: Path) -> Path:
    """The page on BraTS case pat0003 (FLAIR): structures "edema" and "enhancing" prompted on the axial slice
    through the tumour, the coronal and sagittal views beside it."""
    from selenium.webdriver.common.by import By

    from medseg.interactive.baselines import create_baseline
    from medseg.io import read_image
    from medseg.serve.interactive_app import create_app

    brats = DATA / "brats2013_mini"
    image = brats / "imagesTr" / "brats_pat0003_0000.nii.gz"
    labels = read_image(brats / "labelsTr" / "brats_pat0003.nii.gz").array[0]
    z = int(np.argmax((labels > 0).sum((1, 2))))
    edema = np.argwhere(labels[z] == 2)
    enhancing = np.argwhere(labels[z] == 4)
    app = create_app(create_baseline("random_walker"), token=TOKEN, image=image,
                     structures={2: "edema", 4: "enhancing"})
    base, stop = serve_in_thread(app)
    driver = chromium(1500, 900)
    try:
        driver.get(f"{base}/?token={TOKEN}")
        wait_for(driver, "return window.medseg.planes[2] !== undefined && !window.medseg.busy")
        driver.execute_script("document.getElementById('slice').value = arguments[0];"
                              "document.getElementById('slice').dispatchEvent(new Event('input'));", z)
        wait_for(driver, f"return window.medseg.slice === {z} && !window.medseg.busy")
        canvas = driver.find_element(By.ID, "canvas")
        count = 0
        for points, key in ((edema, "1"), (enhancing, "2")):
            driver.find_element(By.TAG_NAME, "body").send_keys(key)
            wait_for(driver, "return !window.medseg.busy")
            time.sleep(0.3)
            for row, col in points[np.linspace(0, len(points) - 1, 3).astype(int)]:
                count += 1
                click_pixel(driver, canvas, row, col)
                wait_for(driver, f"return document.getElementById('status').dataset.interactions === '{count}' && "
                             "!window.medseg.busy")
        time.sleep(0.5)
        output.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(output))
    finally:
        driver.quit()
        stop()
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="a promptable model folder")
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--screenshot", type=Path, default=None, help="write the README's screenshot here instead")
    args = parser.parse_args(argv)
    if args.screenshot:
        print(f"wrote {screenshot(args.screenshot)}")
        return 0
    import torch

    from medseg.interactive.baselines import create_baseline
    from medseg.interactive.predictor import load_segmenter

    torch.manual_seed(args.seed)
    promptable = load_segmenter(args.model)  # None: the shipped model
    with tempfile.TemporaryDirectory() as folder:
        image = test_image(Path(folder))
        results = {"promptable": latency(promptable, image, args.clicks, args.seed),
                   "random_walker": latency(create_baseline("random_walker"), image, args.clicks, args.seed)}
    record = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "torch_threads": torch.get_num_threads(), "image": "256x256 (CVC-ClinicDB frame 0000, centre crop)",
              "promptable_model": str(args.model) if args.model else "shipped (medseg/interactive/weights)",
              "command": "python bench/annotation.py", "results": results}
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
