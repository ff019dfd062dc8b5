"""Data-parallel training under torchrun (2 CPU processes, gloo on 127.0.0.1): the same loss curve as one process
with the whole batch, one stopping step for all ranks under a budget, rank-0-only writes, a kill -9 of one rank
and ``--resume``; and the pieces (torchrun's role, the rebuilt command line of ``--nproc``) in one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medseg.distributed import RankGroup, processes_on_this_machine, torchrun_role
from medseg.errors import MedsegError
from medseg.training.checkpoint import load_checkpoint
from tests.training.conftest import tiny_dataset_and_plan
from tests.training.ddp_worker import train

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("ddp_worker.py")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def test_a_lone_process_is_rank_0_of_1_and_its_collectives_return_their_input() -> None:
    assert torchrun_role({}) == torchrun_role({"RANK": "0"})  # half a torchrun environment is none
    role = torchrun_role({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                          "TORCHELASTIC_RESTART_COUNT": "1"})
    assert (role.rank, role.world_size, role.local_rank, role.local_world_size, role.restart_count) == (3, 4, 1, 2, 1)
    assert role.launched and not torchrun_role({}).launched
    with pytest.raises(MedsegError, match="not integers"):
        torchrun_role({"RANK": "a", "WORLD_SIZE": "2"})
    group = RankGroup()
    assert (group.rank, group.world_size, group.is_main, group.parallel) == (0, 1, True, False)
    assert group.agree_max(0.25) == 0.25 and group.mean(0.5) == 0.5
    network = torch.nn.Linear(2, 2)
    assert group.data_parallel(network) is network
    assert group.run_on_main(lambda: 7) == 7
    assert processes_on_this_machine() == 1  # not under torchrun: this process has the cores alone


def test_nproc_reruns_the_train_command_with_the_same_options() -> None:
    import typer.main

    from medseg.cli.app import app
    from medseg.cli.torchrun_launch import command_line

    train_command = typer.main.get_command(app).commands["train"]
    given = ["data", "-c", "2d", "--budget", "20m", "--resume", "--no-validation", "--set", "net.a=1", "--set",
             "net.b=2", "--nproc", "2", "--workers", "0"]
    context = train_command.make_context("train", list(given))
    rebuilt = command_line(context, drop=["nproc"])
    assert rebuilt[0] == "train" and "--nproc" not in rebuilt
    again = train_command.make_context("train", rebuilt[1:])
    assert {**context.params, "nproc": None} == again.params
    assert again.params["set_"] == ["net.a=1", "net.b=2"] and again.params["validation"] is False


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory) -> Path:
    """The worker's two runs (fixed steps; a budget with a slower rank 1) under torchrun with 2 processes."""
    out = tmp_path_factory.mktemp("ddp")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             str(WORKER), str(out)], capture_output=True, text=True, env=_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def _record(out: Path, run: str, rank: int) -> dict:
    return json.loads((out / f"{run}_rank{rank}.json").read_text())


@pytest.mark.slow
def test_two_ranks_give_the_loss_curve_of_one_process_with_the_doubled_batch(two_rank_runs: Path,
                                                                            tmp_path: Path) -> None:
    reference = train(tmp_path / "curve")  # one process, the whole global batch of 8 per step
    ranks = [_record(two_rank_runs, "curve", rank) for rank in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    expected = [h["train_loss"] for h in reference.state.history]
    assert len(expected) == 4 and expected[-1] < expected[0]
    for record in ranks:  # each rank logs the loss averaged over both halves of the batch
        assert [h["iteration"] for h in record["history"]] == [5, 10, 15, 20]
        assert [h["train_loss"] for h in record["history"]] == pytest.approx(expected, abs=1e-4)
    assert [h["val_loss"] for h in ranks[0]["history"]] == pytest.approx(
        [h["val_loss"] for h in reference.state.history], abs=1e-4)
    distributed = load_file(str(two_rank_runs / "curve" / "weights.safetensors"))
    single = load_file(str(tmp_path / "curve" / "weights.safetensors"))
    for name, tensor in single.items():
        torch.testing.assert_close(distributed[name], tensor, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_ranks_stop_at_the_same_step_under_a_budget_and_only_rank_0_writes(two_rank_runs: Path) -> None:
    ranks = [_record(two_rank_runs, "budget", rank) for rank in (0, 1)]
    steps = {r["iteration"] for r in ranks}
    assert len(steps) == 1 and steps.pop() > 5  # rank 1 sleeps in every step, yet both stop together
    assert [h["elapsed"] for h in ranks[0]["history"]] == [h["elapsed"] for h in ranks[1]["history"]]
    assert ranks[0]["history"][-1]["elapsed"] >= 2.0 >= ranks[0]["history"][-2]["elapsed"]
    assert all("val_loss" in h for h in ranks[0]["history"])  # rank 0 validates, the others do not
    assert not any("val_loss" in h for h in ranks[1]["history"])
    checkpoint = load_checkpoint(two_rank_runs / "budget" / "checkpoint.pt")["state"]
    assert checkpoint["iteration"] == ranks[0]["iteration"]
    for run in ("curve", "budget"):  # the callbacks (checkpoint, log, weights) ran on rank 0 alone
        assert (two_rank_runs / f"{run}_callbacks_rank0.txt").is_file()
        assert not (two_rank_runs / f"{run}_callbacks_rank1.txt").exists()


def _rank_process(agent: subprocess.Popen, rank: int, timeout: float = 300) -> int:
    """The pid of torchrun's worker of ``rank`` under the ``agent`` process (a loaded machine may take minutes
    to start it)."""
    parent = agent.pid
    deadline = time.time() + timeout
    while time.time() < deadline and agent.poll() is None:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                environ = (entry / "environ").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue
            if ppid == parent and f"RANK={rank}".encode() in environ:
                return int(entry.name)
        time.sleep(0.1)
    raise AssertionError(f"no rank {rank} under process {parent} (exit code {agent.poll()})")


@pytest.mark.slow
def test_kill_9_of_one_rank_then_resume_continues_from_the_last_checkpoint(tmp_path: Path) -> None:
    dataset, plans = tiny_dataset_and_plan(tmp_path)
    model = tmp_path / "model"
    command = [sys.executable, "-m", "medseg", "train", str(dataset), "-c", "2d", "-f", "0", "-o", str(model),
               "-p", str(plans), "--preprocessed", str(tmp_path / "cache"), "--max-iterations", "12",
               "--iterations-per-epoch", "3", "--workers", "0", "--budget", "600", "--no-validation",
               "--nproc", "2"]
    checkpoint = model / "fold_0" / "checkpoint.pt"
    log = tmp_path / "killed_run.log"  # a file, not a pipe nobody reads while the run goes on
    with log.open("w") as output:
        agent = subprocess.Popen(command, env=_env(), stdout=output, stderr=subprocess.STDOUT)
    rank1 = _rank_process(agent, 1)
    deadline = time.time() + 300
    while not checkpoint.exists() and agent.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert agent.poll() is None, log.read_text()[-3000:]
    os.kill(rank1, signal.SIGKILL)
    agent.wait(timeout=120)
    assert agent.returncode != 0  # torchrun saw the rank die and stopped the group
    killed_at = load_checkpoint(checkpoint)["state"]["iteration"]
    assert 3 <= killed_at < 12, log.read_text()[-3000:]

    finished = subprocess.run([*command, "--resume"], env=_env(), capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert finished.stdout.count("resumed and trained 12 steps") == 1  # rank 0 reports, once
    history = json.loads((model / "fold_0" / "training_log.json").read_text())["history"]
    assert [h["iteration"] for h in history] == list(range(3, 13, 3))  # the checkpoint's epochs, then the rest
    assert (model / "fold_0" / "weights.safetensors").is_file()
