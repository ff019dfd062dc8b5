"""Each family overfits one real 128x128 crop of ISBI 2012 EM (membranes) to Dice > 0.9 within a step budget (CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medseg.nets import create

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "isbi2012_em"

# family -> (network, small-width config, learning rate, step budget); every budget is ~2x the steps it needs
CASES = {
    "unet": ("unet", {"features": (8, 16, 32, 64)}, 1e-2, 80),
    "plan_unet": ("plan_unet", {"features_per_stage": (8, 16, 32, 64), "kernel_sizes": (3, 3, 3, 3),
                                "strides": (1, 2, 2, 2)}, 1e-2, 60),
    "vnet": ("vnet", {"features": (8, 16, 32, 64), "encoder_convs": (1, 2, 2, 2), "decoder_convs": (2, 2, 1),
                      "kernel_size": 3}, 1e-2, 80),
    "unetpp": ("unetpp", {"features": (8, 16, 32, 64)}, 1e-2, 80),
    "unetr": ("unetr", {"img_size": 128, "patch_size": 8, "feature_size": 8, "hidden": 64, "layers": 3,
                        "heads": 4}, 1e-2, 80),
    "swin_unetr": ("swin_unetr", {"feature_size": 8, "depths": (2, 2), "heads": (2, 4), "window": 4}, 1e-2, 80),
    "swin_unet": ("swin_unet", {"embed_dim": 16, "patch_size": 2, "depths": (1, 1, 1), "heads": (2, 4, 8),
                                "window": 4}, 3e-3, 140),
    "transunet": ("transunet", {"cnn_features": (8, 16, 32, 64), "cnn_blocks": (1, 1, 1), "hidden": 64, "layers": 2,
                                "heads": 4, "decoder_features": (32, 16, 16, 8), "img_size": 128, "dropout": 0.0},
                  1e-2, 140),
    "umamba": ("umamba", {"features_per_stage": (8, 16, 32, 64), "kernel_sizes": (3, 3, 3, 3), "strides": (1, 2, 2, 2),
                          "n_conv_per_stage": 1, "head_dim": 8, "d_state": 8, "ssm_stages": (1, 2, 3)}, 1e-2, 60),
}


@pytest.fixture(scope="module")
def em_crop() -> tuple[torch.Tensor, torch.Tensor]:
    image_path, label_path = DATA / "imagesTr" / "em_000_0000.png", DATA / "labelsTr" / "em_000.png"
    if not (image_path.is_file() and label_path.is_file()):
        pytest.skip(f"ISBI 2012 EM data not found at {DATA} (clone the project next to ../shared)")
    from medseg.io import read_image

    image = read_image(image_path).array[0, 192:320, 192:320].astype(np.float32)
    label = read_image(label_path).array[0, 192:320, 192:320].astype(np.int64)
    assert set(np.unique(label)) == {0, 1}
    image = (image - image.mean()) / image.std()
    return torch.from_numpy(image)[None, None], torch.from_numpy(label)[None]


def _dice(logits: torch.Tensor, target: torch.Tensor) -> float:
    prediction = logits.argmax(1) == 1
    reference = target == 1
    return (2 * (prediction & reference).sum() / (prediction.sum() + reference.sum())).item()


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(CASES))
def test_overfits_one_real_crop(family, em_crop):
    name, cfg, lr, budget = CASES[family]
    x, y = em_crop
    torch.manual_seed(0)
    model = create(name, 2, 1, 2, **cfg)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    dice = 0.0
    for step in range(1, budget + 1):
        model.train()
        logits = model(x)
        foreground = logits.softmax(1)[:, 1]
        soft_dice = (2 * (foreground * y).sum() + 1) / (foreground.sum() + y.sum() + 1)
        loss = F.cross_entropy(logits, y) + 1 - soft_dice
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 10 == 0:
            with torch.no_grad():
                dice = _dice(model.eval()(x), y)
            if dice > 0.9:
                break
    assert dice > 0.9, f"{name}: Dice {dice:.3f} after {budget} steps"
