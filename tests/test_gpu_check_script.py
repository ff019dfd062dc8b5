"""bench/gpu_check.sh's CPU side: the script runs end to end on the CPU at a tenth of the sizes and writes its
figures; refuses a CUDA device that is not there in one line. (The CUDA tests themselves, tests/gpu/, skip
without a GPU.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_check_script_runs_on_the_cpu_and_writes_its_figures(tmp_path: Path) -> None:
    output = tmp_path / "gpu_check.json"
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "cpu", "0.1", str(output)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(output.read_text())
    assert set(figures["results"]) == {"2d", "3d"}
    for shape in figures["results"].values():
        assert shape["train_float32_steps_per_s"] > 0 and shape["train_bfloat16_steps_per_s"] > 0
        assert shape["predict_windows_per_s"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_without_a_gpu_the_script_stops_at_once_with_one_clear_line(tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "cuda", "1.0", str(tmp_path / "x.json")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode != 0 and "no CUDA GPU is visible" in done.stderr
    assert not (tmp_path / "x.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_without_a_gpu_plan_train_and_predict_on_cuda_refuse_before_any_work(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medseg.cli.app import app
    from tests.conftest import shared_subset

    runner = CliRunner()
    dataset = shared_subset("isbi2012_em", 2, tmp_path / "isbi")
    plan = runner.invoke(app, ["plan", str(dataset), "-o", str(tmp_path / "plans.json"), "--device", "cuda"])
    assert plan.exit_code == 2 and "no CUDA GPU is visible" in plan.output
    assert not (tmp_path / "plans.json").exists()
    assert runner.invoke(app, ["plan", str(dataset), "-o", str(tmp_path / "plans.json"), "--flops", "1e10",
                               "--budget", "60"]).exit_code == 0
    train = runner.invoke(app, ["train", str(dataset), "-c", "2d", "-f", "all", "-o", str(tmp_path / "model"), "-p",
                                str(tmp_path / "plans.json"), "--device", "cuda", "--max-iterations", "1"])
    assert train.exit_code == 2 and "no CUDA GPU is visible" in train.output
    assert not (tmp_path / "model").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_without_a_gpu_the_promptable_and_in_context_commands_on_cuda_refuse_before_any_work(tmp_path: Path
                                                                                            ) -> None:
    from typer.testing import CliRunner

    from medseg.cli.app import app
    from medseg.errors import MedsegError
    from medseg.incontext.session import InContextSession
    from medseg.interactive.predictor import load_segmenter
    from medseg.nets.incontext_unet import InContextConfig, InContextUNet

    runner = CliRunner()
    dataset = ROOT.parent / "shared" / "data" / "isbi2012_em"
    for command in ("train-incontext", "train-interactive"):
        done = runner.invoke(app, [command, str(dataset), "-o", str(tmp_path / command), "--budget", "5s",
                                   "--device", "cuda"])
        assert done.exit_code == 2 and "no CUDA GPU is visible" in done.output, done.output
        assert not (tmp_path / command).exists()
    (tmp_path / "support").mkdir()
    (tmp_path / "target.png").write_bytes(b"")
    done = runner.invoke(app, ["incontext", "--support", str(tmp_path / "support"), "--target",
                               str(tmp_path / "target.png"), "-o", str(tmp_path / "out"), "--device", "cuda"])
    assert done.exit_code == 2 and "no CUDA GPU is visible" in done.output, done.output
    assert not (tmp_path / "out").exists()
    with pytest.raises(MedsegError, match="no CUDA GPU is visible"):
        load_segmenter(tmp_path / "no_model", device="cuda")
    with pytest.raises(MedsegError, match="no CUDA GPU is visible"):
        InContextSession(InContextUNet(InContextConfig(features=[4, 8], grid=[16, 16])), device="cuda")
