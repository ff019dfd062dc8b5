"""Shared fixtures: the real-data battery in ../shared/data (tests skip with a reason when it is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_dataset(name: str) -> Path:
    """Path of ``../shared/data/<name>``; skips the calling test when the battery is not there."""
    path = SHARED_DATA / name
    if not (path / "dataset.json").is_file():
        pytest.skip(f"real-data battery not found at {path} (clone the project next to ../shared)")
    return path


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
