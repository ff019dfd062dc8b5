"""Nothing is left behind after kill -9: `medseg train`, `preprocess` and `predict` killed mid-run and run again
leave no temporary file anywhere in their output, no worker process of a killed run (these, `evaluate`, any
`map_cases`) survives it, and every file they write has the umask's mode."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable

import pytest

from medseg.atomic import is_temporary
from medseg.workers import process_alive

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
UMASK = 0o027  # not the default, so that a mode from anywhere else shows
FILE_MODE, FOLDER_MODE = 0o666 & ~UMASK, 0o777 & ~UMASK


def medseg(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "medseg", *map(str, args)]


def run(*args: str | Path) -> subprocess.CompletedProcess:
    result = subprocess.run(medseg(*args), capture_output=True, text=True, env=ENV, umask=UMASK)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid``, found through the parent id of each process in /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] not in (b"Z", b"X"):
                parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def kill_when(command: list[str], ready: Callable[[set[int]], bool], *, timeout: float = 120) -> set[int]:
    """Start ``command``; as soon as ``ready(its descendants)`` holds, kill it with SIGKILL. Returns the
    descendants it had at that moment (its worker processes)."""
    process = subprocess.Popen(command, env=ENV, umask=UMASK, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while True:
            workers = descendants(process.pid)
            if ready(workers):
                break
            if process.poll() is not None:
                pytest.fail(f"{command[3]} ended (exit {process.returncode}) before the kill point: "
                            f"{process.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{command[3]} did not reach the kill point in {timeout} s")
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()
    return workers


def assert_gone_soon(workers: set[int], what: str) -> None:
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(process_alive(pid) for pid in workers):
        time.sleep(0.05)
    survivors = sorted(pid for pid in workers if process_alive(pid))
    assert not survivors, f"{what}: worker processes {survivors} outlived their killed parent by 2 s"


LEAVE_TEMPORARY = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from medseg.atomic import atomic_write

    def hang(temporary):
        print(temporary, flush=True)
        time.sleep(600)

    atomic_write(Path(sys.argv[1]), hang, suffix=sys.argv[2] or None)
""")


def leave_temporary(target: Path, suffix: str = "") -> Path:
    """What a kill -9 in the middle of writing ``target`` leaves: a writer killed inside ``atomic_write``."""
    process = subprocess.Popen([sys.executable, "-c", LEAVE_TEMPORARY, str(target), suffix], stdout=subprocess.PIPE,
                               text=True, umask=UMASK)
    temporary = Path(process.stdout.readline().strip())
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdout.close()
    assert is_temporary(temporary) and temporary.is_file(), temporary
    return temporary


def temporaries(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if is_temporary(path))


def assert_umask_modes(folder: Path) -> None:
    wrong = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in [folder, *folder.rglob("*")]
             if stat.S_IMODE(p.stat().st_mode) != (FOLDER_MODE if p.is_dir() else FILE_MODE)}
    assert not wrong, f"not {oct(FILE_MODE)} (files) / {oct(FOLDER_MODE)} (folders) under umask {oct(UMASK)}: {wrong}"


def test_a_worker_exits_when_its_parent_died_before_it_was_watched() -> None:
    # The race the parent check closes: the parent is gone before prctl, so the kernel would never signal.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    script = ("import os, sys; from medseg.workers import die_with_parent; "
              "die_with_parent(int(sys.argv[1])); print('alive')")
    orphan = subprocess.run([sys.executable, "-c", script, str(gone.pid)], capture_output=True, text=True)
    assert orphan.returncode == 1 and "alive" not in orphan.stdout
    watched = subprocess.run([sys.executable, "-c", script, str(os.getpid())], capture_output=True, text=True)
    assert watched.returncode == 0 and watched.stdout.strip() == "alive", watched.stderr


POOL_PARENT = textwrap.dedent("""
    import time
    from medseg.parallel import map_cases
    map_cases(time.sleep, [600] * 4, workers=2, progress=False)
""")


def test_pool_workers_die_with_a_killed_parent() -> None:
    workers = kill_when([sys.executable, "-c", POOL_PARENT, "pool"], lambda found: len(found) >= 2)
    assert_gone_soon(workers, "map_cases")


def make_dataset(root: Path, cases: int) -> tuple[Path, Path]:
    """A synthetic dataset of ``cases`` cases and a plan with a small 2d network (a second per checkpoint)."""
    run("example-data", root / "shapes", "--cases", str(cases))
    run("plan", root / "shapes", "-o", root / "plans.json", "--flops", "1e10", "--budget", "60",
        "--set", "2d.patch_size=[32,32]", "--set", "2d.batch_size=4")
    return root / "shapes", root / "plans.json"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """40 cases: preprocessing runs long enough to be killed while its pool works."""
    return make_dataset(tmp_path_factory.mktemp("kill40"), 40)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """8 cases: training validates 2 of them."""
    return make_dataset(tmp_path_factory.mktemp("kill8"), 8)


@pytest.mark.slow
def test_killed_preprocess_leaves_nothing_behind(shapes: tuple[Path, Path], tmp_path: Path) -> None:
    dataset, plans = shapes
    cache = tmp_path / "cache"
    command = medseg("preprocess", dataset, "-c", "2d", "-p", plans, "-o", cache, "--workers", "2")
    workers = kill_when(command, lambda found: len(found) >= 2 and len(list((cache / "2d").glob("*.json"))) >= 2)
    assert_gone_soon(workers, "preprocess")
    leftovers = [leave_temporary(cache / "2d" / "shapes_039.npy"), leave_temporary(cache / "plans.json")]
    (cache / "2d" / "notes.part.txt").write_text("a user's file")
    run("preprocess", dataset, "-c", "2d", "-p", plans, "-o", cache, "--workers", "2")
    assert temporaries(cache) == [] and not any(path.exists() for path in leftovers)
    assert (cache / "2d" / "notes.part.txt").read_text() == "a user's file"
    (cache / "2d" / "notes.part.txt").unlink()
    assert len(list((cache / "2d").glob("*.json"))) == 40
    assert_umask_modes(cache)


@pytest.mark.slow
def test_killed_training_resumes_and_leaves_nothing_behind(small: tuple[Path, Path], tmp_path: Path) -> None:
    dataset, plans = small
    model = tmp_path / "model"
    fold = model / "fold_0"
    command = medseg("train", dataset, "-c", "2d", "-f", "0", "-o", model, "-p", plans, "--max-iterations", "400",
                     "--iterations-per-epoch", "4", "--workers", "1", "--budget", "600")
    # Killed while the loader's worker runs, after a checkpoint was written.
    workers = kill_when(command, lambda found: (fold / "checkpoint.pt").is_file() and len(found) >= 1)
    assert_gone_soon(workers, "train")
    assert not (fold / "weights.safetensors").exists()
    leftovers = [leave_temporary(fold / "checkpoint.pt"), leave_temporary(fold / "progress.png", ".png"),
                 leave_temporary(fold / "validation" / "shapes_001.nii.gz", ".part.nii.gz")]
    (fold / "validation" / "my.notes").write_text("a user's file")
    finished = run("train", dataset, "-c", "2d", "-f", "0", "-o", model, "-p", plans, "--max-iterations", "24",
                   "--iterations-per-epoch", "4", "--workers", "1", "--budget", "600", "--resume")
    assert "resumed" in finished.stdout
    assert temporaries(model) == [] and not any(path.exists() for path in leftovers)
    assert (fold / "validation" / "my.notes").read_text() == "a user's file"
    (fold / "validation" / "my.notes").unlink()
    assert (fold / "weights.safetensors").is_file()
    assert_umask_modes(model)


@pytest.mark.slow
def test_killed_evaluation_leaves_no_worker(small: tuple[Path, Path], tmp_path: Path) -> None:
    labels = small[0] / "labelsTr"
    command = medseg("evaluate", labels, labels, "-o", tmp_path / "eval", "--workers", "2")
    workers = kill_when(command, lambda found: len(found) >= 2)  # its spawned pool is starting or working
    assert_gone_soon(workers, "evaluate")


@pytest.mark.slow
def test_killed_prediction_leaves_nothing_behind(small: tuple[Path, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medseg.cli.app import app

    dataset, plans = small
    model = tmp_path / "model"
    run("train", dataset, "-c", "2d", "-f", "0", "-o", model, "-p", plans, "--max-iterations", "8",
        "--iterations-per-epoch", "4", "--workers", "0", "--budget", "600")
    inputs = tmp_path / "scans"
    inputs.mkdir()
    for index in range(4):
        name = f"shapes_{index:03d}_0000.nii.gz"
        (inputs / name).write_bytes((dataset / "imagesTr" / name).read_bytes())
    out = tmp_path / "labels"
    workers = kill_when(medseg("predict", "-i", inputs, "-o", out, "-m", model),
                        lambda found: len(list(out.glob("*.nii.gz"))) >= 1)
    assert_gone_soon(workers, "predict")
    assert len(list(out.glob("*.nii.gz"))) < 4
    owned = leave_temporary(out / "shapes_003.nii.gz", ".part.nii.gz")
    foreign = leave_temporary(out / "not_a_case_of_this_run.nii.gz", ".part.nii.gz")  # not this run's to remove
    overwrite = ["--overwrite"] if "--overwrite" in CliRunner().invoke(app, ["predict", "--help"]).output else []
    run("predict", "-i", inputs, "-o", out, "-m", model, *overwrite)
    assert not owned.exists() and temporaries(out) == [foreign]
    foreign.unlink()
    assert sorted(p.name for p in out.iterdir()) == [f"shapes_{index:03d}.nii.gz" for index in range(4)]
    assert_umask_modes(out)


def test_interactive_training_resume_removes_a_kills_temporaries(tmp_path: Path) -> None:
    import numpy as np
    import torch

    from medseg.nets.promptable_unet import PromptableConfig
    from medseg.interactive.slices import SliceBank
    from medseg.interactive.training import interactive_train_config, interactive_trainer

    rows, cols = np.mgrid[:48, :48]
    targets = np.stack([np.hypot(rows - 24, cols - 16 - 4 * i) < 8 for i in range(4)])
    images = np.repeat((0.2 + 0.6 * targets)[:, None], 3, 1)
    bank = SliceBank(torch.tensor(images, dtype=torch.float16), torch.tensor(targets), np.zeros(4, int),
                     [f"synthetic/{i}" for i in range(4)], ["synthetic"])
    config = interactive_train_config(budget_seconds=None, max_iterations=2, batch_size=2, validate_every=2)
    network = PromptableConfig(features=[4, 8])
    interactive_trainer(bank, tmp_path, config=config, network_config=network).run(progress=False)
    fold = tmp_path / "fold_all"
    leftovers = [leave_temporary(fold / "checkpoint.pt"), leave_temporary(fold / "progress.png", ".png"),
                 leave_temporary(tmp_path / "model.json", ".json")]
    config.max_iterations = 3
    resumed = interactive_trainer(bank, tmp_path, config=config, network_config=network)
    from medseg.atomic import remove_stale_temporaries

    remove_stale_temporaries(tmp_path)  # what train_interactive(resume=True) does for the model folder
    assert resumed.resume()
    resumed.run(progress=False)
    assert temporaries(tmp_path) == [] and not any(path.exists() for path in leftovers)
