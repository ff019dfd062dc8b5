"""The 2.5d configuration end to end: planned for 3D data, trained with neighbouring slices as channels, predicted
back to the input's grid through `medseg predict`, and a clear error for an image it cannot take."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.config import Plan, read_json
from medseg.data.layout import open_dataset
from medseg.errors import MedsegError
from medseg.inference import Predictor
from medseg.io import Image, read_image


def test_2_5d_trains_and_predicts_the_centre_slice_of_each_stack(tmp_path: Path) -> None:
    runner = CliRunner()
    dataset, plans, model = tmp_path / "shapes", tmp_path / "plans.json", tmp_path / "model"
    assert runner.invoke(app, ["example-data", str(dataset), "--cases", "3"]).exit_code == 0
    result = runner.invoke(app, ["plan", str(dataset), "-o", str(plans), "--flops", "1e10", "--budget", "60",
                                 "--set", "2.5d.patch_size=[32,32]"])
    assert result.exit_code == 0, result.output
    assert "2.5d" in result.output
    config = Plan.from_dict(read_json(plans)).configurations["2.5d"]
    assert config.slice_context == 2 and config.network["in_channels"] == 5 and config.patch_size == [32, 32]
    result = runner.invoke(app, ["train", str(dataset), "-c", "2.5d", "-f", "0", "-o", str(model), "-p", str(plans),
                                 "--max-iterations", "4", "--iterations-per-epoch", "2", "--workers", "0"])
    assert result.exit_code == 0, result.output
    spec = read_json(model / "model.json")
    assert spec["configuration"] == "2.5d" and spec["network"]["in_channels"] == 5
    out = tmp_path / "pred"
    result = runner.invoke(app, ["predict", "-m", str(model), "-i", str(dataset / "imagesTr"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = open_dataset(dataset)
    for case in data.cases:
        predicted, source = read_image(out / f"{case.case_id}.nii.gz"), data.read_image(case)
        assert predicted.spatial_shape == source.spatial_shape
        assert np.allclose(predicted.spacing, source.spacing) and np.allclose(predicted.origin, source.origin)

    predictor = Predictor.from_folder(model, tta=False)
    seen = []
    network = predictor.networks[0]
    network.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
    image = data.read_image(data.cases[0])
    probabilities = predictor.predict_with_probabilities(image)[1].array
    assert seen and all(s[1:] == (5, 32, 32) for s in seen)  # 5 slices as channels, one 2D window each
    assert np.allclose(probabilities.sum(0), 1, atol=1e-4)
    with pytest.raises(MedsegError, match="2.5D model"):
        predictor.predict(Image(np.zeros((1, 40, 40), np.float32), (1.0, 1.0), (0.0, 0.0), np.eye(2)))

    # slice z's prediction sees slices z - 2 .. z + 2 and no others
    volume = torch.randn((1, 9, 32, 32), generator=torch.Generator().manual_seed(0))
    changed = volume.clone()
    changed[0, 6] += 3.0
    before, after = predictor.predict_preprocessed(volume), predictor.predict_preprocessed(changed)
    moved = (after - before).abs().flatten(2).amax(2)[1]  # per slice, class 1
    assert all(moved[z] > 1e-6 for z in (4, 5, 6, 7, 8)) and all(moved[z] == 0 for z in (0, 1, 2, 3))
