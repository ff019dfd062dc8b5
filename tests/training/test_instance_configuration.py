"""The instance configuration end to end on real MoNuSeg cases: planned because the dataset has instancesTr/,
cached with the distance map of the expert's nuclei as the last channel, trained with the distance head, and
`medseg predict` writing instance maps beside the label maps on the input's grid; without instancesTr the
objects are the connected components of the labels."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.config import Plan, read_json
from medseg.data import cache
from medseg.io import read_image
from medseg.transforms import AugmentationConfig, SampledBatch, augment
from medseg.transforms.instance_distance import distance_target
from tests.conftest import shared_subset


def _nuclei(root: Path, count: int = 3, instances: bool = True) -> Path:
    dataset = shared_subset("monuseg", count, root)
    if not instances:
        shutil.rmtree(dataset / "instancesTr")
    return dataset


def test_instance_model_trains_on_distance_maps_and_predicts_instance_maps(tmp_path: Path) -> None:
    runner = CliRunner()
    dataset, plans, model = _nuclei(tmp_path / "nuclei"), tmp_path / "plans.json", tmp_path / "model"
    result = runner.invoke(app, ["plan", str(dataset), "-o", str(plans), "--flops", "1e10", "--budget", "60",
                                 "--set", "instance.patch_size=[64,64]"])
    assert result.exit_code == 0, result.output
    config = Plan.from_dict(read_json(plans)).configurations["instance"]
    assert config.instances and config.network["num_classes"] == 2 + 1 and config.network["in_channels"] == 3
    result = runner.invoke(app, ["train", str(dataset), "-c", "instance", "-f", "0", "-o", str(model), "-p",
                                 str(plans), "--max-iterations", "4", "--iterations-per-epoch", "2", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert read_json(model / "model.json")["extra"]["instance_head"] is True

    cached = cache.read_case(model / "preprocessed" / "instance", "monuseg_000")
    expert = read_image(dataset / "instancesTr" / "monuseg_000.png").array[0].astype(np.int64)
    assert cached.data.shape == (4, 512, 512)  # RGB + the distance map
    assert np.array_equal(np.asarray(cached.data[-1]), distance_target(expert))

    out = tmp_path / "pred"
    result = runner.invoke(app, ["predict", "-m", str(model), "-i", str(dataset / "imagesTr"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    for index in range(3):
        labels = read_image(out / f"monuseg_{index:03d}.png")
        objects = read_image(out / "instances" / f"monuseg_{index:03d}.png")
        assert objects.spatial_shape == labels.spatial_shape == (512, 512)
        assert np.issubdtype(objects.array.dtype, np.unsignedinteger)
        assert ((objects.array > 0) == (labels.array > 0)).all()
    from medseg.inference import Predictor

    predictor = Predictor.from_folder(model, tta=False)
    image = read_image(dataset / "imagesTr" / "monuseg_000_0000.png")
    labels, objects = predictor.predict_instances(image)
    one_pass = predictor.predict_instances_with_probabilities(image)  # one sliding window for all three
    assert np.array_equal(one_pass[0].array, labels.array) and np.array_equal(one_pass[1].array, objects.array)
    np.testing.assert_allclose(one_pass[2].array, predictor.predict_with_probabilities(image)[1].array, atol=1e-6)
    from medseg.trust.uncertainty import UncertaintyPredictor

    mirrored = UncertaintyPredictor(Predictor.from_folder(model), "tta")  # members: the mirrored copies
    uncertain = mirrored.predict_with_uncertainty(image)  # over the class channels, not the distance channel
    assert uncertain.probabilities.array.shape == one_pass[2].array.shape
    np.testing.assert_allclose(uncertain.probabilities.array.sum(0), 1.0, atol=1e-5)
    assert uncertain.maps["entropy"].array.shape == (1, 512, 512)
    result = runner.invoke(app, ["evaluate", str(out / "instances"), str(dataset / "instancesTr"), "--instances",
                                 "-o", str(tmp_path / "eval"), "--no-plots"])
    assert result.exit_code == 0 and result.output.startswith("instances: pq"), result.output


def test_without_instance_files_the_objects_are_connected_components(tmp_path: Path) -> None:
    from medseg.metrics import label_instances
    from medseg.preprocess.pipeline import preprocess_dataset

    dataset = _nuclei(tmp_path / "nuclei", count=2, instances=False)
    plans = tmp_path / "plans.json"
    plain = CliRunner().invoke(app, ["plan", str(dataset), "-o", str(plans), "--flops", "1e10", "--budget", "60"])
    assert plain.exit_code == 0 and "instance " not in plain.output, plain.output
    asked = CliRunner().invoke(app, ["plan", str(dataset), "-o", str(plans), "--flops", "1e10", "--budget", "60",
                                     "--instances", "--overwrite"])
    assert asked.exit_code == 0 and "instance " in asked.output, asked.output
    preprocess_dataset(dataset, Plan.from_dict(read_json(plans)), "instance", tmp_path / "cache", workers=1,
                       progress=False)
    label = read_image(dataset / "labelsTr" / "monuseg_001.png").array[0]
    cached = cache.read_case(tmp_path / "cache" / "instance", "monuseg_001")
    assert np.array_equal(np.asarray(cached.data[-1]), distance_target(label_instances(label > 0)))


def test_the_distance_channel_is_warped_and_mirrored_but_not_intensity_augmented() -> None:
    image = torch.rand((4, 2, 32, 32), generator=torch.Generator().manual_seed(0)) + 0.5
    label = torch.zeros((4, 1, 32, 32), dtype=torch.int8)
    config = AugmentationConfig.disabled().with_changes(p_brightness=1, p_gamma=1, p_noise=1, mirror_axes=(0, 1),
                                                        target_channels=1)
    out = augment(SampledBatch(["a"] * 4, (32, 32), image.clone(), label, [0, 1, 2, 3]), config,
                  torch.Generator().manual_seed(1))["image"]
    for b in range(4):
        target = out[b, 1]
        candidates = [image[b, 1], image[b, 1].flip(0), image[b, 1].flip(1), image[b, 1].flip(0, 1)]
        assert any(torch.equal(target, c) for c in candidates)  # the same values, possibly mirrored
        assert not any(torch.allclose(out[b, 0], c) for c in (image[b, 0], image[b, 0].flip(0),
                                                              image[b, 0].flip(1), image[b, 0].flip(0, 1)))
