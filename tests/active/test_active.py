"""Active learning: the query strategies' scores against their definitions (scipy.stats for entropy), k-center
greedy against brute force, the loop end to end on real data (every strategy, the split kept, the same initial
cases, resume), and bad input."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy
from typer.testing import CliRunner

from medseg.active.loop import ActiveSettings, split_cases
from medseg.active.strategies import (check_strategies, k_center_greedy, mean_entropy, mean_mutual_information,
                                      random_draw, top_scored)
from medseg.cli.app import app
from medseg.errors import MedsegError
from tests.conftest import shared_dataset
from tests.trust.tiny_model import one_line_exit_2


def test_mean_entropy_is_scipys_entropy_averaged_over_voxels():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet([1.0, 2.0, 0.5], size=(6, 7)).transpose(2, 0, 1)  # (K, H, W)
    expected = scipy_entropy(probabilities, axis=0).mean()
    assert mean_entropy(probabilities) == pytest.approx(expected, rel=1e-9)
    certain = np.stack([np.ones((4, 4)), np.zeros((4, 4))])
    assert mean_entropy(certain) == pytest.approx(0.0, abs=1e-9)


def test_mutual_information_is_zero_for_agreeing_members_and_large_for_confident_disagreement():
    rng = np.random.default_rng(1)
    member = rng.dirichlet([1.0, 1.0], size=(5, 5)).transpose(2, 0, 1)
    assert mean_mutual_information([member, member.copy()]) == pytest.approx(0.0, abs=1e-12)
    one, other = np.stack([np.ones((3, 3)), np.zeros((3, 3))]), np.stack([np.zeros((3, 3)), np.ones((3, 3))])
    assert mean_mutual_information([one, other]) == pytest.approx(np.log(2), rel=1e-6)  # certain, opposite
    a, b = rng.dirichlet([1, 1, 1], size=(4,)).T, rng.dirichlet([1, 1, 1], size=(4,)).T  # (K, voxels)
    by_hand = np.mean(scipy_entropy((a + b) / 2, axis=0) - (scipy_entropy(a, axis=0) + scipy_entropy(b, axis=0)) / 2)
    assert mean_mutual_information([a, b]) == pytest.approx(by_hand, rel=1e-9)
    with pytest.raises(MedsegError, match="two members"):
        mean_mutual_information([a])


def test_k_center_greedy_matches_brute_force_and_covers_the_clusters():
    rng = np.random.default_rng(2)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    pool = np.concatenate([c + rng.normal(0, 0.3, (6, 2)) for c in centres])
    labelled = centres[:1] + rng.normal(0, 0.3, (2, 2))  # the labelled cases sit in the first cluster
    chosen = k_center_greedy(pool, labelled, 3)
    assert sorted({i // 6 for i in chosen}) == [1, 2, 3]  # one case of each unlabelled cluster

    every = np.concatenate([labelled, pool])
    scale = every.std(0)
    p, known = (pool - every.mean(0)) / scale, (labelled - every.mean(0)) / scale
    brute: list[int] = []
    for _ in range(3):  # farthest from its nearest chosen-or-labelled point, by brute force
        centres_now = np.concatenate([known, p[brute]]) if brute else known
        distance = [min(np.linalg.norm(x - c) for c in centres_now) if i not in brute else -1
                    for i, x in enumerate(p)]
        brute.append(int(np.argmax(distance)))
    assert chosen == brute
    with pytest.raises(MedsegError, match="pool of"):
        k_center_greedy(pool[:2], labelled, 3)


def test_top_scored_random_draw_and_strategy_names():
    assert top_scored({"b": 0.5, "a": 0.5, "c": 0.9, "d": 0.1}, 2) == ["c", "a"]  # ties: the smaller id first
    pool = [f"case_{i:02d}" for i in range(20)]
    first = random_draw(pool, 5, np.random.default_rng(3))
    assert first == random_draw(list(reversed(pool)), 5, np.random.default_rng(3)) and len(set(first)) == 5
    assert check_strategies(["random", " entropy", "random"]) == ["random", "entropy"]
    with pytest.raises(MedsegError, match="unknown query strategy margin"):
        check_strategies(["random", "margin"])


def test_the_split_holds_out_the_last_block_and_refuses_a_pool_too_small():
    ids = [f"c{i:03d}" for i in range(40)]
    split = split_cases(ids, ActiveSettings(initial=4, query=2, rounds=3, test_fraction=0.25, test_cases=5,
                                            pool_size=20))
    assert len(split.test) == 5 and set(split.test) <= set(ids[30:]) and split.test[0] == "c030"
    assert len(split.pool) == 20 and set(split.pool) <= set(ids[:30])
    with pytest.raises(MedsegError, match="more than the pool's 20"):
        split_cases(ids, ActiveSettings(initial=5, query=5, rounds=4, pool_size=20))
    with pytest.raises(MedsegError, match="--members 1"):
        ActiveSettings(members=1)


def _command(dataset, output, *extra: str) -> list[str]:
    return ["active", str(dataset), "-o", str(output), "--initial", "2", "--query", "2", "--rounds", "1",
            "--budget", "30s", "--max-iterations", "3", "--test-cases", "2", "--pool-size", "8", "--workers", "0",
            "--set", "2d.patch_size=[128,128]", "--set", "2d.batch_size=2", *extra]


@pytest.mark.slow
def test_every_strategy_queries_unlabelled_pool_cases_and_the_run_resumes(tmp_path):
    """Real CVC-ClinicDB frames, models of 3 steps: the loop's bookkeeping, not the strategies' merit (that is
    bench/active.py's)."""
    dataset = shared_dataset("cvc_clinicdb")
    output = tmp_path / "run"
    strategies = "random,entropy,ensemble-disagreement,coreset"
    result = CliRunner().invoke(app, _command(dataset, output, "--strategy", strategies))
    assert result.exit_code == 0, result.output
    record = json.loads((output / "active.json").read_text())
    pool, test = set(record["split"]["pool"]), set(record["split"]["test"])
    assert len(pool) == 8 and len(test) == 2 and not pool & test
    initial = {s: runs["0"][0]["labelled_ids"] for s, runs in record["runs"].items()}
    assert len({tuple(ids) for ids in initial.values()}) == 1  # every strategy starts from the same cases
    round_0_dice = {runs["0"][0]["test_dice"] for runs in record["runs"].values()}
    assert len(round_0_dice) == 1  # ... and the same round-0 model
    for strategy, runs in record["runs"].items():
        first, second = runs["0"]
        assert len(first["queried"]) == 2 and set(first["queried"]) <= pool - set(first["labelled_ids"])
        assert second["labelled_ids"] == first["labelled_ids"] + first["queried"] and second["queried"] == []
        assert set(second["test_dice_per_case"]) == test and 0.0 <= second["test_dice"] <= 1.0
        assert first["members"] == (2 if strategy == "ensemble-disagreement" else 1)
        assert record["curve"][strategy]["labelled"] == [2, 4]
    assert (output / "active.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # only the last round's models are kept
    assert not list((output / "seed_0" / "round_0").glob("model*"))
    assert (output / "seed_0" / "coreset" / "round_1" / "model" / "fold_all" / "weights.safetensors").is_file()

    # an interrupted run: the last round of one strategy lost -> the same command trains that round only
    del record["runs"]["coreset"]["0"][1]
    (output / "active.json").write_text(json.dumps(record))
    again = CliRunner().invoke(app, _command(dataset, output, "--strategy", strategies))
    assert again.exit_code == 0, again.output
    trained = [line for line in again.output.splitlines() if "round" in line and "Dice" in line]
    assert len(trained) == 1 and trained[0].startswith("coreset, seed 0, round 1"), again.output
    assert json.loads((output / "active.json").read_text())["runs"]["coreset"]["0"][1]["labelled"] == 4


@pytest.mark.parametrize("extra, needle", [
    (["--strategy", "random,margin"], "unknown query strategy margin"),
    (["--rounds", "9"], "more than the pool's 8"),
    (["--members", "1", "--strategy", "ensemble-disagreement"], "--members 1"),
    (["--seeds", "0"], "--seeds 0"),
])
def test_bad_options_are_one_clear_line_and_write_nothing(tmp_path, extra, needle):
    dataset = shared_dataset("cvc_clinicdb")
    output = tmp_path / "run"
    one_line_exit_2(CliRunner().invoke(app, _command(dataset, output, *extra)), needle)
    assert not output.exists()


def test_another_runs_settings_or_a_foreign_folder_are_refused(tmp_path):
    dataset = shared_dataset("cvc_clinicdb")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    one_line_exit_2(CliRunner().invoke(app, _command(dataset, foreign)), "not an active-learning run")
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    previous = tmp_path / "previous"
    previous.mkdir()
    settings = {**ActiveSettings().__dict__, "initial": 7}
    (previous / "active.json").write_text(json.dumps({"dataset": str(dataset), "settings": settings}, default=list))
    one_line_exit_2(CliRunner().invoke(app, _command(dataset, previous)), "other settings or data")


def test_every_case_needs_a_label(tmp_path):
    """A dataset with an unlabelled training case: refused before any work."""
    dataset = shared_dataset("drive")
    copy = tmp_path / "drive"
    for sub in ("imagesTr", "labelsTr"):
        (copy / sub).mkdir(parents=True)
        for path in itertools.islice(sorted((dataset / sub).iterdir()), 6):
            (copy / sub / path.name).symlink_to(path)
    (copy / "dataset.json").write_text((dataset / "dataset.json").read_text())
    next(iter(sorted((copy / "labelsTr").iterdir()))).unlink()
    result = CliRunner().invoke(app, _command(copy, tmp_path / "run"))
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert not (tmp_path / "run").exists()
