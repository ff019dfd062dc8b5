"""Training precision: the choice of ``--precision``, and bfloat16 autocast keeping float32 master weights and the
float32 run's loss curve."""

from __future__ import annotations

import pytest
import torch

import medseg.compute.precision as precision_module
from medseg.compute import autocast, build_optimizer, native_bfloat16, resolve_precision, training_step
from medseg.compute.step import NonFiniteLoss
from medseg.errors import MedsegError
from medseg.losses import DeepSupervisionLoss, create as create_loss
from medseg.nets import create


def test_auto_takes_the_calibrated_choice_where_native(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision_module, "native_bfloat16", lambda device: True)
    assert resolve_precision("auto", "cpu", measured="bfloat16") == "bfloat16"
    assert resolve_precision("auto", "cpu", measured="float32") == "float32"
    assert resolve_precision("auto", "cpu") == "float32"  # no calibration: no measured gain on a CPU
    assert resolve_precision("auto", "cuda") == "bfloat16"  # AMP on a GPU, as before
    assert resolve_precision("float32", "cpu", measured="bfloat16") == "float32"
    monkeypatch.setattr(precision_module, "native_bfloat16", lambda device: False)
    assert resolve_precision("auto", "cpu", measured="bfloat16") == "float32"
    with pytest.raises(MedsegError, match="without native bfloat16"):
        resolve_precision("bfloat16", "cpu")
    with pytest.raises(MedsegError, match="unknown precision"):
        resolve_precision("fp16", "cpu")


def _curve(precision: str, steps: int = 40) -> tuple[list[float], torch.nn.Module]:
    """Losses of a small deep-supervised U-Net learning bright squares on noise, from one seed."""
    torch.manual_seed(0)
    net = create("plan_unet", spatial_dims=2, in_channels=1, num_classes=2, features_per_stage=[8, 16, 32],
                 kernel_sizes=[[3, 3]] * 3, strides=[[1, 1], [2, 2], [2, 2]], deep_supervision=True)
    optimizer = build_optimizer(net.parameters(), "sgd", 1e-2, 3e-5, "cpu")
    deep = DeepSupervisionLoss(create_loss("nnunet_dice_ce"), zero_coarsest=True)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        label = torch.zeros(4, 1, 32, 32, dtype=torch.long)
        for b in range(4):
            y, x = torch.randint(0, 20, (2,), generator=generator).tolist()
            label[b, 0, y:y + 10, x:x + 10] = 1
        image = label.float() * 2 + torch.randn(4, 1, 32, 32, generator=generator)
        loss = training_step(net, optimizer, lambda n: deep([o.float() for o in n(image)], label),
                             precision=precision, device_type="cpu", gradient_clip=12.0)
        losses.append(float(loss))
    return losses, net


@pytest.mark.skipif(not native_bfloat16("cpu"), reason="this CPU has no native bfloat16 (AVX512-BF16/AMX)")
def test_bfloat16_autocast_keeps_float32_weights_and_the_loss_curve() -> None:
    fp32, _ = _curve("float32")
    bf16, net = _curve("bfloat16")
    assert all(p.dtype == torch.float32 for p in net.parameters())  # master weights stay float32
    assert bf16[-1] < 0.6 * bf16[0] and fp32[-1] < 0.6 * fp32[0]  # both learn
    windows = [slice(i, i + 10) for i in range(0, 40, 10)]
    for window in windows:  # mean loss of each 10-step window within 0.05 of float32's
        assert abs(sum(bf16[window]) - sum(fp32[window])) / 10 < 0.05, (fp32, bf16)
    with autocast("cpu", "bfloat16"):
        assert net(torch.zeros(1, 1, 32, 32))[0].dtype == torch.bfloat16  # the arithmetic really is bfloat16


def test_a_non_finite_loss_changes_nothing() -> None:
    net = torch.nn.Linear(2, 1)
    before = [p.detach().clone() for p in net.parameters()]
    optimizer = build_optimizer(net.parameters(), "adamw", 1e-2, 0.0, "cpu")
    with pytest.raises(NonFiniteLoss):
        training_step(net, optimizer, lambda n: n(torch.ones(1, 2)).sum() * float("nan"), precision="float32",
                      device_type="cpu", gradient_clip=1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_train_refuses_bfloat16_where_it_would_be_emulated(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from medseg.cli.app import app
    from tests.training.conftest import tiny_dataset_and_plan

    dataset, plans = tiny_dataset_and_plan(tmp_path)
    monkeypatch.setattr(precision_module, "native_bfloat16", lambda device: False)
    result = CliRunner().invoke(app, ["train", str(dataset), "-c", "2d", "-f", "0", "-o", str(tmp_path / "m"),
                                      "-p", str(plans), "--max-iterations", "2", "--precision", "bfloat16"])
    assert result.exit_code == 2 and "without native bfloat16" in result.output
    assert not (tmp_path / "m" / "fold_0").exists()  # refused before any training
