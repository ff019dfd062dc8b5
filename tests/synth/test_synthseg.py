"""SynthSeg-style synthesis: without randomness the image is a function of the labels; with the defaults every
draw is a new contrast of a deformed but recognisable label map, repeatable by seed; the dataset it writes passes
medseg check on the source maps' grids; bad input is one line and exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.data.check import check_dataset
from medseg.io import Image, read_image, write_image
from medseg.synth.synthseg import SynthSettings, synth_dataset, synthesize

STILL = SynthSettings(rotation_degrees=0.0, scaling=(1.0, 1.0), elastic_magnitude=0.0, sd=(0.0, 0.0),
                      bias_magnitude=0.0, blur_voxels=(0.0, 0.0), resolution=(1.0, 1.0), noise=(0.0, 0.0),
                      gamma_log_sd=0.0)


def _label_map(shape=(12, 40, 40)) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij")
    radius = np.sqrt(sum((g / (n / 2)) ** 2 for g, n in zip(grids, shape)))
    label = np.zeros(shape, np.int64)
    label[radius < 0.7] = 1
    label[radius < 0.35] = 2
    return label


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_without_randomness_the_image_is_a_function_of_the_labels():
    label = _label_map()
    image, out = synthesize(label, torch.Generator().manual_seed(0), STILL)
    assert np.array_equal(out, label)
    values = [np.unique(image[label == v]) for v in (0, 1, 2)]
    assert all(len(v) == 1 for v in values)  # one intensity per label
    assert len({float(v[0]) for v in values}) == 3 and image.min() == 0 and image.max() == 1


def test_each_draw_is_a_new_contrast_of_a_deformed_but_recognisable_map_and_a_seed_repeats_it():
    label = _label_map()
    orders, first = set(), None
    for seed in range(8):
        image, out = synthesize(label, torch.Generator().manual_seed(seed), SynthSettings())
        assert image.shape == label.shape and image.dtype == np.float32 and np.isfinite(image).all()
        assert 0 <= image.min() and image.max() <= 1
        assert set(np.unique(out)) <= {0, 1, 2}
        assert _dice(out >= 1, label >= 1) > 0.6 and not np.array_equal(out, label)
        means = [image[out == v].mean() for v in (0, 1, 2)]
        orders.add(tuple(np.argsort(means)))
        first = first or (image, out)
    assert len(orders) >= 3  # the labels' brightness order changes from image to image
    again = synthesize(label, torch.Generator().manual_seed(0), SynthSettings())
    assert np.array_equal(again[0], first[0]) and np.array_equal(again[1], first[1])


def test_2d_maps_work_too():
    image, out = synthesize(_label_map((48, 48)), torch.Generator().manual_seed(1))
    assert image.shape == out.shape == (48, 48)


def _source(root, count=3):
    geometry = ((3.0, 0.8, 0.8), (10.0, -5.0, 2.0), np.eye(3))
    for index in range(count):
        write_image(Image(_label_map()[None].astype(np.uint8), *geometry), root / "labelsTr" / f"c{index}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "FLAIR"}, "numTraining": count,
                                                   "labels": {"background": 0, "edema": 1, "core": 2},
                                                   "file_ending": ".nii.gz"}))
    return root


def test_the_dataset_keeps_the_labels_and_grids_and_passes_check(tmp_path):
    source = _source(tmp_path / "source")
    out = synth_dataset(source, tmp_path / "synth", count=5, seed=3)
    spec = json.loads((out / "dataset.json").read_text())
    assert spec["labels"] == {"background": 0, "edema": 1, "core": 2} and spec["numTraining"] == 5
    assert spec["channel_names"] == {"0": "synthetic"} and spec["synthetic"]["seed"] == 3
    assert not check_dataset(out).problems
    image = read_image(out / "imagesTr" / "synth_0004_0000.nii.gz")
    assert np.allclose(image.spacing, (3.0, 0.8, 0.8)) and np.allclose(image.origin, (10.0, -5.0, 2.0))


def test_generation_labels_shape_the_image_and_are_written_as_segmentation_labels(tmp_path):
    """--segment 2=1: label 2 draws its own intensity but is written as 1; --blank 0: the outside is 0 in the
    image (skull-stripped data), as in the real BraTS volumes."""
    source = _source(tmp_path / "source", count=1)
    result = CliRunner().invoke(app, ["synth", str(source), "-o", str(tmp_path / "synth"), "--n", "3",
                                      "--segment", "2=1", "--blank", "0"])
    assert result.exit_code == 0, result.output
    spec = json.loads((tmp_path / "synth" / "dataset.json").read_text())
    assert spec["labels"] == {"background": 0, "edema": 1} and spec["synthetic"]["segment"] == {"2": 1}
    for index in range(3):
        image = read_image(tmp_path / "synth" / "imagesTr" / f"synth_{index:04d}_0000.nii.gz").array[0]
        label = read_image(tmp_path / "synth" / "labelsTr" / f"synth_{index:04d}.nii.gz").array[0]
        assert set(np.unique(label)) == {0, 1}
        assert (image[label == 0] == 0).all() and (image[label == 1] > 0).mean() > 0.99
        core = _label_map() == 2  # the core is still its own contrast inside what is written as label 1
        inside = (label == 1) & ~core
        assert abs(image[core & (label == 1)].mean() - image[inside].mean()) > 0.02
    bad = CliRunner().invoke(app, ["synth", str(source), "-o", str(tmp_path / "bad"), "--segment", "2:1"])
    _one_line_exit_2(bad, "GEN=OUT")
    assert not (tmp_path / "bad").exists()


def _one_line_exit_2(result, needle):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.output, result.output


def test_bad_input_is_one_line_exit_2_and_no_folder(tmp_path):
    runner = CliRunner()
    out = tmp_path / "synth"
    _one_line_exit_2(runner.invoke(app, ["synth", str(tmp_path / "missing"), "-o", str(out)]), "missing")
    source = _source(tmp_path / "source", count=2)
    write_image(Image(np.full((1, 12, 40, 40), 0.5, np.float32), (1.0,) * 3, (0.0,) * 3, np.eye(3)),
                source / "labelsTr" / "c1.nii.gz")
    _one_line_exit_2(runner.invoke(app, ["synth", str(source), "-o", str(out), "--n", "2"]), "c1.nii.gz")
    assert not out.exists()
    _one_line_exit_2(runner.invoke(app, ["synth", str(source), "-o", str(out), "--n", "0"]), "--n")
    out.mkdir()
    _one_line_exit_2(runner.invoke(app, ["synth", str(source), "-o", str(out)]), "exists")


@pytest.mark.parametrize("value", [200, -1])
def test_label_values_outside_int8_are_refused(value):
    label = _label_map()
    label[0, 0, 0] = value
    with pytest.raises(Exception, match="outside 0..127"):
        synthesize(label, torch.Generator().manual_seed(0))
