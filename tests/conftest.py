"""Shared fixtures: the real-data battery in ../shared/data (tests skip with a reason when it is absent)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_dataset(name: str) -> Path:
    """Path of ``../shared/data/<name>``; skips the calling test when the battery is not there."""
    path = SHARED_DATA / name
    if not (path / "dataset.json").is_file():
        pytest.skip(f"real-data battery not found at {path} (clone the project next to ../shared)")
    return path


def shared_subset(name: str, count: int, folder: Path) -> Path:
    """The first ``count`` cases (sorted ids) of ``../shared/data/<name>`` as a dataset folder of symlinks at
    ``folder`` (``medseg.data.subset.subset_dataset``: images, labels, raters' maps and extras such as instancesTr);
    skips the calling test when the battery is not there."""
    from medseg.data.layout import open_dataset
    from medseg.data.subset import subset_dataset

    dataset = open_dataset(shared_dataset(name))
    return subset_dataset(dataset, sorted(case.case_id for case in dataset.cases)[:count], folder)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-data battery not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tests use tiny tensors: one intra-op thread is faster than two, and two threads fighting other processes
    for a shared 2-core machine made small steps 10-30x slower. Restored after each test."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1200,900")


@pytest.fixture
def browser(tmp_path):
    """Headless Debian Chromium driven by selenium; fails, never skips, when chromium or chromedriver is missing
    (scripts/install_system_packages.sh installs them)."""
    for program in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(program) is None:
            pytest.fail(f"{program} is missing: apt-get install -y chromium chromium-driver (.ci/run does this)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_experimental_option("prefs", {"download.default_directory": str(tmp_path / "downloads"),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
