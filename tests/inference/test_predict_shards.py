"""``medseg predict --shard i/n`` and ``medseg predict`` under torchrun: every case written exactly once, equal to
the unsharded prediction; a bad shard is one line and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.distributed import parse_shard, prediction_shard, shard_items
from medseg.errors import MedsegError
from medseg.io import Image, read_image, write_image

ROOT = Path(__file__).resolve().parents[2]


def _predict(*args) -> str:
    result = CliRunner().invoke(app, ["predict", *[str(a) for a in args]])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def small_cases(tmp_path: Path, shapes_dataset: Path) -> Path:
    """The 3 shapes cases cut to 8 slices (a small volume keeps the test fast)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for path in sorted((shapes_dataset / "imagesTr").iterdir()):
        image = read_image(path)
        write_image(Image(image.array[:, :8], image.spacing, image.origin, image.direction), folder / path.name)
    return folder


def _labels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: read_image(p).array for p in sorted(folder.iterdir())}


def test_shards_partition_the_cases_and_torchrun_gives_the_rank_share(monkeypatch) -> None:
    cases = [f"c{i}" for i in range(7)]
    shards = [shard_items(cases, i, 3) for i in range(3)]
    assert sorted(sum(shards, [])) == cases and shards[0] == ["c0", "c3", "c6"]
    assert parse_shard("1/2") == (1, 2)
    for bad in ("2/2", "1", "-1/2", "a/b", "0/0"):
        with pytest.raises(MedsegError, match="is not i/n"):
            parse_shard(bad)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert prediction_shard(None) == (1, 2)
    with pytest.raises(MedsegError, match="under torchrun"):
        prediction_shard("0/2")


def test_two_shards_write_each_case_once_equal_to_one_run(tmp_path: Path, small_cases: Path,
                                                          shapes_model_2d: Path) -> None:
    whole = tmp_path / "whole"
    _predict("-i", small_cases, "-o", whole, "-m", shapes_model_2d, "--no-tta")
    sharded = tmp_path / "sharded"
    names = []
    for index in range(2):  # two independent processes' worth, into one folder, no --overwrite needed
        before = {p.name for p in sharded.iterdir()} if sharded.is_dir() else set()
        output = _predict("-i", small_cases, "-o", sharded, "-m", shapes_model_2d, "--no-tta", "--shard",
                          f"{index}/2")
        new = {p.name for p in sharded.iterdir()} - before
        assert f"wrote {len(new)} label file(s)" in output
        names.append(new)
    assert names[0] and names[1] and not names[0] & names[1]
    expected = _labels(whole)
    assert names[0] | names[1] == set(expected) and len(expected) == 3
    got = _labels(sharded)
    for name, array in expected.items():
        np.testing.assert_array_equal(got[name], array)
    bad = CliRunner().invoke(app, ["predict", "-i", str(small_cases), "-o", str(tmp_path / "bad"), "-m",
                                   str(shapes_model_2d), "--shard", "2/2"])
    assert bad.exit_code == 2 and "--shard '2/2' is not i/n" in bad.output
    assert len(bad.output.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_predict_under_torchrun_shares_the_cases_between_ranks(tmp_path: Path, small_cases: Path,
                                                               shapes_model_2d: Path) -> None:
    whole = tmp_path / "whole"
    _predict("-i", small_cases, "-o", whole, "-m", shapes_model_2d, "--no-tta")
    ranks = tmp_path / "ranks"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "-m", "medseg", "predict", "-i", str(small_cases), "-o", str(ranks), "-m",
                             str(shapes_model_2d), "--no-tta"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(result.stdout.count(f"wrote {n} label file(s)") for n in (1, 2)) == [1, 1]  # 2 + 1 cases
    expected, got = _labels(whole), _labels(ranks)
    assert set(got) == set(expected)
    for name, array in expected.items():
        np.testing.assert_array_equal(got[name], array)
