"""``medseg benchmark``: the held-out block, the request checks, and a tiny grid end to end (train, predict,
score, compare, rank, resume)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.benchmark.grid import BenchmarkRequest, check_request, parse_networks, run_benchmark
from medseg.benchmark.split import make_split
from medseg.data.subset import held_out_block
from medseg.cli.app import app
from medseg.errors import MedsegError
from medseg.io import Image, write_image


def _write_discs(root: Path, cases: int, seed: int, *, test_cases: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(np.arange(40), np.arange(40), indexing="ij")

    def write(case: str, images: str, labels: str) -> None:
        centre = rng.uniform(14, 26, 2)
        label = (((grids[0] - centre[0]) ** 2 + (grids[1] - centre[1]) ** 2) < rng.uniform(40, 90)).astype(np.uint8)
        image = (50 + 140 * label + rng.integers(0, 50, label.shape)).astype(np.uint8)
        write_image(Image.from_array(image), root / images / f"{case}_0000.png")
        write_image(Image.from_array(label), root / labels / f"{case}.png")

    for i in range(cases):
        write(f"c{i:02d}", "imagesTr", "labelsTr")
    for i in range(test_cases):
        write(f"t{i:02d}", "imagesTs", "labelsTs")
    (root / "dataset.json").write_text(json.dumps({
        "name": root.name, "channel_names": {"0": "EM"}, "labels": {"background": 0, "disc": 1},
        "numTraining": cases, "file_ending": ".png"}))
    return root


def test_the_held_out_block_is_the_last_ids_in_sorted_order():
    train, test = held_out_block(["c3", "c1", "c0", "c2", "c5", "c4", "c7", "c6"], 0.25)
    assert train == ["c0", "c1", "c2", "c3", "c4", "c5"] and test == ["c6", "c7"]
    with pytest.raises(MedsegError, match="cannot be split"):
        held_out_block(["c0"], 0.5)
    with pytest.raises(MedsegError, match="between 0 and 1"):
        held_out_block(["c0", "c1"], 1.0)


def test_the_split_links_files_and_prefers_labelled_test_cases(tmp_path):
    plain = make_split(_write_discs(tmp_path / "plain", 8, 0), tmp_path / "work_plain")
    assert plain.test_cases == ["c06", "c07"] and len(plain.train_cases) == 6
    assert sorted(p.name for p in plain.test_labels.iterdir()) == ["c06.png", "c07.png"]
    assert all(p.is_symlink() for p in (plain.train / "imagesTr").iterdir())
    assert json.loads((plain.train / "dataset.json").read_text())["numTraining"] == 6
    labelled = make_split(_write_discs(tmp_path / "labelled", 6, 1, test_cases=2), tmp_path / "work_labelled")
    assert labelled.test_cases == ["t00", "t01"] and len(labelled.train_cases) == 6
    assert "labelsTs" in labelled.rule


def test_a_bad_request_is_refused_before_anything_runs(tmp_path):
    data = _write_discs(tmp_path / "d", 8, 0)
    base = dict(datasets=[data], networks=["unet"], budget_seconds=10, output=tmp_path / "out")
    check_request(BenchmarkRequest(**base))
    for change, message in [({"networks": ["no_such_net"]}, "unknown network"),
                            ({"networks": ["unet", "unet"]}, "repeat"),
                            ({"datasets": [tmp_path]}, "no dataset.json"),
                            ({"budget_seconds": 0}, "not positive"),
                            ({"jobs": 0}, "not between 1"), ({"jobs": 10_000}, "not between 1")]:
        with pytest.raises(MedsegError, match=message):
            check_request(BenchmarkRequest(**{**base, **change}))
    assert parse_networks(["unet,resunet", " umamba "]) == ["unet", "resunet", "umamba"]
    result = CliRunner().invoke(app, ["benchmark", str(data), "--networks", "unet,nope", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "unknown network(s) nope" in result.output
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """Two tiny datasets x two networks at 6 s each, run once for the tests of this module."""
    root = tmp_path_factory.mktemp("grid")
    datasets = [_write_discs(root / "discs_a", 8, 2), _write_discs(root / "discs_b", 8, 3)]
    request = BenchmarkRequest(datasets=datasets, networks=["unet", "attention_unet"], budget_seconds=6,
                               output=root / "bench")
    seen = []
    summary = run_benchmark(request, on_cell=lambda d, n, r: seen.append((d, n, r is None)))
    return request, summary, seen


@pytest.mark.slow
def test_a_tiny_grid_trains_scores_compares_and_resumes(grid):
    request, summary, seen = grid
    bench = request.output
    assert seen.count(("discs_a", "unet", True)) == 1 and len(seen) == 8
    for dataset in ("discs_a", "discs_b"):
        for network in ("unet", "attention_unet"):
            cell = json.loads((bench / dataset / network / "result.json").read_text())
            assert cell["steps"] > 0 and cell["params"] > 0 and 0.0 <= cell["dice"] <= 1.0
            assert sorted(cell["per_case"]["dice"]) == ["c06", "c07"]
            assert summary["results"][dataset][network]["dice"] == pytest.approx(cell["dice"])
        assert len(summary["comparisons_dice"][dataset]) == 1
    assert sorted(summary["ranks"]) == ["attention_unet", "unet"]
    assert sum(summary["ranks"].values()) == pytest.approx(3.0)  # ranks 1 and 2 on each dataset, averaged
    assert (bench / "critical_difference.png").read_bytes()[:4] == b"\x89PNG"
    on_disk = json.loads((bench / "benchmark.json").read_text())
    assert on_disk["ranks"] == pytest.approx(summary["ranks"])
    again = []  # a rerun finds every cell done and trains nothing
    run_benchmark(request, on_cell=lambda d, n, r: again.append(r is None))
    assert again == [False] * 4


@pytest.mark.slow
def test_side_by_side_cells_share_the_cores_and_one_cache(tmp_path):
    data = _write_discs(tmp_path / "discs", 8, 4)
    spec = json.loads((data / "dataset.json").read_text())
    (data / "dataset.json").write_text(json.dumps({**spec, "name": "DISCS"}))  # cells go by the folder's name
    request = BenchmarkRequest(datasets=[data], networks=["unet", "attention_unet"], budget_seconds=4,
                               output=tmp_path / "bench", jobs=2)
    seen = []
    summary = run_benchmark(request, on_cell=lambda d, n, r: seen.append((n, r is None)))
    assert sorted(seen[:2]) == [("attention_unet", True), ("unet", True)]  # both started before either ended
    for network in ("unet", "attention_unet"):
        cell = json.loads((tmp_path / "bench" / "discs" / network / "result.json").read_text())
        assert cell["jobs"] == 2 and cell["threads"] == 1 and cell["steps"] > 0
        assert summary["results"]["discs"][network]["dice"] == pytest.approx(cell["dice"])
    cache = tmp_path / "bench" / "discs" / "preprocessed"
    assert len([p for p in cache.rglob("*") if p.is_file() and "c0" in p.name]) > 0
    assert list(summary["results"]["discs"]) == ["unet", "attention_unet"]  # the request's order, not the finish


@pytest.fixture
def bench_folder(grid):
    return grid[0].output


@pytest.mark.slow
def test_the_report_opens_in_chromium_with_every_picture_loaded(bench_folder, browser, tmp_path):
    result = CliRunner().invoke(app, ["report", str(bench_folder), "-o", str(tmp_path / "report.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report.html").read_text()
    assert "http://" not in page and "https://" not in page  # self-contained: no CDN, no external file
    browser.get((tmp_path / "report.html").as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])")
    alts = [alt for alt, _ in images]
    assert all(loaded for _, loaded in images), images
    assert "Critical-difference diagram of the Dice ranks" in alts
    assert sum("per-case Dice" in a for a in alts) == 2 and sum("training loss" in a for a in alts) == 4
    assert sum("best case" in a for a in alts) == 2 and sum("worst case" in a for a in alts) == 2
    headings = browser.execute_script("return Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
    assert headings[:3] == ["Results on the held-out block", "Ranks across datasets", "Paired comparisons"]
    assert "The plan's decisions" in headings
    again = CliRunner().invoke(app, ["report", str(bench_folder), "-o", str(tmp_path / "report.html")])
    assert again.exit_code == 2 and "exists already" in again.output


@pytest.mark.slow
def test_a_model_folder_report(bench_folder, tmp_path):
    result = CliRunner().invoke(app, ["report", str(bench_folder / "discs_a" / "unet" / "model"),
                                      "-o", str(tmp_path / "model.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "model.html").read_text()
    assert "Weights card" in page and "intended use" in page and "data:image/png;base64," in page


def test_report_of_a_folder_that_is_neither_is_one_line_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()
