"""The shipped universal model (bench/train_shipped.py --universal): package data under 20 MB, loads with the
network disabled for the whole process (the sentence-embedding model included), and segments held-out cases of
the shared datasets when asked by name above a Dice floor set under what these cases measured (lungs 0.67,
polyps 0.43 on the 4 cases; bench/universal.py has the whole held-out blocks); ``medseg
segment`` without -m uses it."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.data.layout import open_dataset
from medseg.io import read_image
from medseg.metrics import confusion, dice
from medseg.universal.model import SHIPPED, UniversalModel
from tests.conftest import shared_dataset

pytestmark = pytest.mark.slow


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("the network is disabled for this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_the_shipped_universal_model_is_package_data_under_20_mb():
    weights = SHIPPED / "fold_all" / "weights.safetensors"
    assert weights.is_file() and weights.stat().st_size <= 20 * 2**20
    files = sorted(str(p.relative_to(SHIPPED)) for p in SHIPPED.rglob("*") if p.is_file())
    assert "vocabulary.json" in files and len([f for f in files if f.endswith("plans.json")]) == 7
    assert not [f for f in files if "checkpoint" in f or "preprocessed" in f]


def _held_out(name: str, count: int) -> list:
    dataset = open_dataset(shared_dataset(name))
    cases = sorted(dataset.cases, key=lambda c: c.case_id)
    block = cases[-int(np.ceil(0.25 * len(cases))):]  # bench/universal.py's held-out block
    return [block[i] for i in np.linspace(0, len(block) - 1, count).round().astype(int)]


def test_the_shipped_model_loads_offline_and_finds_lungs_and_polyps_by_free_text(no_network):
    model = UniversalModel.from_folder()
    found = model.match("neuron boundaries")  # placed by the sentence-embedding model, loaded offline
    assert (found.entry.name, found.method) == ("cell membrane", "embedding")
    for name, prompt, floor in [("cxr_lungs", "poumons", 0.5), ("cvc_clinicdb", "colon polyps", 0.25)]:
        dataset = open_dataset(shared_dataset(name))
        scores = []
        for case in _held_out(name, 4):
            answer = model.segment(dataset.read_image(case), [prompt])[0]
            reference = dataset.read_label(case).array[0] > 0
            scores.append(dice(confusion(answer.mask.array[0] > 0, reference)))
        assert np.mean(scores) >= floor, (name, scores)


def test_medseg_segment_without_a_model_uses_the_shipped_one(tmp_path):
    image = sorted((shared_dataset("cxr_lungs") / "imagesTr").iterdir())[-1]
    result = CliRunner().invoke(app, ["segment", str(image), "-p", "lungs", "-p", "liver", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "nearest known structures" in result.output  # all prompts checked first
    assert not (tmp_path / "o").exists()
    result = CliRunner().invoke(app, ["segment", str(image), "-p", "lungs", "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    mask = read_image(next((tmp_path / "o").glob("00_lung*")))
    assert mask.same_grid(read_image(image)) and 0.1 < mask.array.mean() < 0.6
