"""Issue 16's re-probe: the same classes of bad input as the matrix, made differently, through the real CLI.

Each row ends in exit 2 and one line naming the file with a fix, no traceback and nothing in the output folder
(``_assert_one_clear_line`` of the matrix) — or, for inputs that are valid, in a normal run.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.io import read_image, write_image
from tests.cli.test_bad_input_matrix import _assert_one_clear_line, _files_under, _ok, _write_2d, _write_3d


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("probes")
    runner = CliRunner()
    for kind, writer in (("2d", _write_2d), ("3d", _write_3d)):
        writer(root / kind)
    plans = root / "plans_2d.json"
    _ok(runner.invoke(app, ["plan", str(root / "2d"), "-o", str(plans), "--flops", "1e10"]))
    return {"root": root, "runner": runner, "plans": plans}


def _copy(base: dict, kind: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(base["root"] / kind, tmp_path / kind))


# --------------------------------------------------------------------------- plans.json edited by hand

def _set(config_key: str, value) -> Callable[[dict], None]:
    def edit(plan: dict) -> None:
        target = plan["configurations"]["2d"]
        *parents, key = config_key.split(".")
        for parent in parents:
            target = target[parent]
        target[key] = value
    return edit


PLAN_EDITS: dict[str, tuple[Callable[[dict], None], str]] = {
    "batch_size_string": (_set("batch_size", "2"), "batch_size is '2'"),
    "batch_size_zero": (_set("batch_size", 0), "batch_size is 0"),
    "patch_size_string": (_set("patch_size", "48x48"), "patch_size is '48x48'"),
    "patch_size_three_axes_in_2d": (_set("patch_size", [48, 48, 48]), "not a list of 2 positive integers"),
    "target_spacing_negative": (_set("target_spacing", [-1.0, 1.0]), "target_spacing is [-1.0, 1.0]"),
    "normalization_unknown": (_set("normalization", [{"scheme": "minmax"}]), "normalization[0].scheme is 'minmax'"),
    "features_string": (_set("network.features_per_stage", "32,64"), "features_per_stage is '32,64'"),
    "resampling_order_word": (_set("resampling.image_order", "cubic"), "resampling is"),
    "num_iterations_null": (_set("num_iterations", None), "num_iterations is None"),
    "unknown_field": (_set("learning_rate", 0.1), "unknown field(s) learning_rate"),
    "configurations_list": (lambda plan: plan.update(configurations=list(plan["configurations"].values())),
                            "configurations is"),
    "schema_from_the_future": (lambda plan: plan.update(schema_version=99), "schema_version 99"),
}


@pytest.mark.parametrize("command", ["preprocess", "train"])
@pytest.mark.parametrize("edit", list(PLAN_EDITS))
def test_a_hand_edited_plan_is_one_line_naming_the_field(base, tmp_path, command, edit):
    change, expected = PLAN_EDITS[edit]
    plan = json.loads(base["plans"].read_text())
    change(plan)
    plans = tmp_path / "plans.json"
    plans.write_text(json.dumps(plan))
    out = tmp_path / "out"
    out.mkdir()
    args = {"preprocess": ["preprocess", str(base["root"] / "2d"), "-c", "2d", "-p", str(plans), "-o",
                           str(out / "pre"), "--workers", "1"],
            "train": ["train", str(base["root"] / "2d"), "-c", "2d", "-f", "0", "-p", str(plans), "-o",
                      str(out / "model"), "--max-iterations", "1", "--no-validation"]}[command]
    result = base["runner"].invoke(app, args)
    _assert_one_clear_line(result, "plans.json", command=command)
    assert expected in result.output
    assert _files_under(out) == []


def test_the_plans_medseg_writes_pass_the_check(base):
    from medseg.config.plan import Plan

    plan = Plan.from_dict(json.loads(base["plans"].read_text()))
    assert Plan.from_dict(plan.to_dict()) == plan


# ------------------------------------------------------------------- files that are not what they seem

def _symlink_loop(dataset: Path) -> str:
    path = dataset / "labelsTr" / "c1.nii.gz"
    path.unlink()
    path.symlink_to(path.name)
    return path.name


def _folder_named_like_an_image(dataset: Path) -> str:
    path = dataset / "imagesTr" / "c1_0000.nii.gz"
    path.unlink()
    path.mkdir()
    return path.name


def _set_nifti_int16(path: Path, offset: int, value: int) -> str:
    """Overwrite the int16 at byte ``offset`` of a .nii.gz header (40: dim[0], 70: datatype); the file's name."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[offset:offset + 2] = struct.pack("<h", value)
    path.write_bytes(gzip.compress(bytes(raw)))
    return path.name


def _nifti_bad_datatype(dataset: Path) -> str:
    return _set_nifti_int16(dataset / "imagesTr" / "c1_0000.nii.gz", 70, 1234)


def _nifti_label_ndim_9(dataset: Path) -> str:
    return _set_nifti_int16(dataset / "labelsTr" / "c1.nii.gz", 40, 9)


FILE_PROBES = {"label_symlink_loop": _symlink_loop, "image_path_is_a_folder": _folder_named_like_an_image,
               "nifti_datatype_1234": _nifti_bad_datatype, "nifti_label_dim0_9": _nifti_label_ndim_9}


@pytest.mark.parametrize("command", ["fingerprint", "plan", "train"])
@pytest.mark.parametrize("probe", list(FILE_PROBES))
def test_odd_files_are_one_line_and_nothing_on_stderr(base, tmp_path, capfd, command, probe):
    dataset = _copy(base, "3d", tmp_path)
    culprit = FILE_PROBES[probe](dataset)
    out = tmp_path / "out"
    out.mkdir()
    args = {"fingerprint": ["fingerprint", str(dataset), "-o", str(out / "fp.json"), "--workers", "1"],
            "plan": ["plan", str(dataset), "-o", str(out / "plans.json"), "--flops", "1e10"],
            "train": ["train", str(dataset), "-c", "2d", "-f", "0", "-o", str(out / "model"), "--max-iterations",
                      "1", "--no-validation"]}[command]
    capfd.readouterr()
    result = base["runner"].invoke(app, args)
    _assert_one_clear_line(result, culprit, command=command)
    assert capfd.readouterr().err == ""  # no niftilib / GDCM line above the error
    assert _files_under(out) == []


# ----------------------------------------------------------------------- MetaImage (.mhd + .raw) data

def _as_mhd(source: Path, destination: Path) -> Path:
    for folder in ("imagesTr", "labelsTr"):
        for path in sorted((source / folder).iterdir()):
            write_image(read_image(path), destination / folder / path.name.replace(".nii.gz", ".mhd"))
    spec = json.loads((source / "dataset.json").read_text())
    spec["file_ending"] = ".mhd"
    (destination / "dataset.json").write_text(json.dumps(spec))
    return destination


def test_a_metaimage_dataset_checks_clean_and_plans(base, tmp_path):
    dataset = _as_mhd(base["root"] / "3d", tmp_path / "mhd")
    assert (dataset / "imagesTr" / "c0_0000.raw").is_file()
    result = base["runner"].invoke(app, ["check", str(dataset), "--workers", "1"])
    assert result.exit_code == 0 and "no problems" in result.output, result.output
    _ok(base["runner"].invoke(app, ["plan", str(dataset), "-o", str(tmp_path / "plans.json"), "--flops", "1e10"]))


def test_predict_reads_a_folder_of_metaimages_and_writes_metaimages(base, tmp_path):
    runner = base["runner"]
    model = tmp_path / "model"
    _ok(runner.invoke(app, ["train", str(base["root"] / "2d"), "-c", "2d", "-f", "all", "-p", str(base["plans"]),
                            "-o", str(model), "--max-iterations", "1", "--no-validation"]))
    inputs = tmp_path / "inputs"
    for case in ("c0", "c1"):
        write_image(read_image(base["root"] / "2d" / "imagesTr" / f"{case}_0000.png"), inputs / f"{case}.mhd")
    out = tmp_path / "labels"
    _ok(runner.invoke(app, ["predict", "-i", str(inputs), "-o", str(out), "-m", str(model), "--no-tta"]))
    assert sorted(p.name for p in out.iterdir()) == ["c0.mhd", "c0.raw", "c1.mhd", "c1.raw"]
    assert "ElementDataFile = c0.raw" in (out / "c0.mhd").read_text()
    labels = read_image(out / "c0.mhd")
    assert labels.spatial_shape == (48, 48) and set(np.unique(labels.array)) <= {0, 1}


# ----------------------------------------------------------------------- evaluate, find-best, convert

def test_find_best_against_another_dataset_is_one_line(base, tmp_path):
    runner = base["runner"]
    model = tmp_path / "model"
    _ok(runner.invoke(app, ["train", str(base["root"] / "2d"), "-c", "2d", "-f", "0", "-p", str(base["plans"]),
                            "-o", str(model), "--max-iterations", "1"]))  # with validation: fold_0/validation/
    out = tmp_path / "out"
    out.mkdir()
    result = runner.invoke(app, ["find-best", str(model), "-d", str(base["root"] / "3d"), "-o",
                                 str(out / "find_best.json")])  # the 3D set has the same case ids c0..c3
    _assert_one_clear_line(result, "labelsTr", command="find-best")
    assert "trained on" in result.output
    assert _files_under(out) == []


@pytest.mark.parametrize("option, value, culprit", [
    ("--labels", "1,x", "--labels"),
    ("--regions", "whole=1,x", "region whole"),
    ("--regions", "dataset", "dataset.json"),  # regions_commonly_scored with a string value
])
def test_evaluate_label_and_region_options_are_one_line_with_a_fix(base, tmp_path, option, value, culprit):
    folder = tmp_path / "set"
    shutil.copytree(base["root"] / "2d" / "labelsTr", folder / "labelsTr")
    (folder / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "cell": 1},
                                                     "regions_commonly_scored": {"whole": [1, "x"]}}))
    out = tmp_path / "out"
    out.mkdir()
    reference = str(folder / "labelsTr")
    result = base["runner"].invoke(app, ["evaluate", reference, reference, "-o", str(out / "ev"), option, value,
                                         "--workers", "1", "--no-plots"])
    _assert_one_clear_line(result, culprit, command="evaluate")
    assert _files_under(out) == []


def _msd(base: dict, tmp_path: Path, edit: Callable[[dict], None]) -> Path:
    from tests.cli.test_bad_input_matrix import _write_msd

    root = tmp_path / "msd"
    root.mkdir()
    _write_msd(root)
    spec = json.loads((root / "dataset.json").read_text())
    edit(spec)
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


@pytest.mark.parametrize("edit", [
    lambda spec: spec["training"].append(dict(spec["training"][0])),  # a case listed twice
    lambda spec: spec["training"][1].update(image=5),
    lambda spec: spec["training"][1].update(label=["./labelsTr/c1.nii.gz"]),
    lambda spec: spec.update(test=[{"label": "./x.nii.gz"}]),
], ids=["case_listed_twice", "image_not_a_path", "label_a_list", "test_entry_without_image"])
def test_convert_refuses_an_msd_training_list_edited_by_hand(base, tmp_path, edit):
    source = _msd(base, tmp_path, edit)
    out = tmp_path / "out"
    out.mkdir()
    result = base["runner"].invoke(app, ["convert", str(source), str(out / "converted")])
    _assert_one_clear_line(result, "dataset.json", command="convert")
    assert _files_under(out) == []


# ---------------------------------------------------------------- values the pipeline would misread

def _rgb_set(root: Path, ending: str) -> Path:
    from medseg.io import Image

    rng = np.random.default_rng(0)
    for case in ("c0", "c1", "c2", "c3"):
        yy, xx = np.mgrid[:40, :40]
        label = ((yy - 20) ** 2 + (xx - 18) ** 2 < 100).astype(np.uint8)
        image = np.stack([60 + 120 * label + rng.integers(0, 30, label.shape)] * 3).astype(np.uint8)
        write_image(Image.from_array(image, channel_axis=True), root / "imagesTr" / f"{case}_0000{ending}")
        write_image(Image.from_array(label), root / "labelsTr" / f"{case}{ending}")
    (root / "dataset.json").write_text(json.dumps({
        "name": "RGB", "channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "polyp": 1},
        "numTraining": 4, "file_ending": ending}))
    return root


def _sixteen_bit_rgb(dataset: Path) -> str:
    path = dataset / "imagesTr" / "c2_0000.tif"
    image = read_image(path)
    write_image(image.with_array(image.array.astype(np.uint16) * 257), path)
    return path.name


def _beyond_float32(dataset: Path) -> str:
    path = dataset / "imagesTr" / "c2_0000.nii.gz"
    image = read_image(path)
    write_image(image.with_array(image.array.astype(np.float64) * 1e300), path)  # Inf once cast to float32
    return path.name


def _dangling_label_link(dataset: Path) -> str:
    path = dataset / "labelsTr" / "c2.nii.gz"
    path.unlink()
    path.symlink_to(dataset / "nowhere" / "c2.nii.gz")
    return path.name


VALUE_PROBES = {"rgb_16_bit_in_8_bit_rgb_set": ("rgb", _sixteen_bit_rgb),
                "float64_beyond_float32": ("3d", _beyond_float32),
                "label_dangling_link": ("3d", _dangling_label_link)}


@pytest.mark.parametrize("command", ["check", "plan", "train"])
@pytest.mark.parametrize("probe", list(VALUE_PROBES))
def test_values_the_pipeline_would_misread_are_refused(base, tmp_path, command, probe):
    kind, make = VALUE_PROBES[probe]
    dataset = _rgb_set(tmp_path / "rgb", ".tif") if kind == "rgb" else _copy(base, kind, tmp_path)
    culprit = make(dataset)
    out = tmp_path / "out"
    out.mkdir()
    args = {"check": ["check", str(dataset), "--workers", "1"],
            "plan": ["plan", str(dataset), "-o", str(out / "plans.json"), "--flops", "1e10"],
            "train": ["train", str(dataset), "-c", "2d", "-f", "0", "-o", str(out / "model"), "--max-iterations",
                      "1", "--no-validation"]}[command]
    result = base["runner"].invoke(app, args)
    _assert_one_clear_line(result, culprit, command=command)
    assert _files_under(out) == []


def test_an_8_bit_rgb_set_and_a_16_bit_grey_image_are_accepted(base, tmp_path):
    """Grey images are z-scored per image, so a 16-bit PNG among 8-bit ones is valid data."""
    rgb = _rgb_set(tmp_path / "rgb", ".png")
    _ok(base["runner"].invoke(app, ["check", str(rgb), "--workers", "1"]))
    grey = _copy(base, "2d", tmp_path)
    path = grey / "imagesTr" / "c2_0000.png"
    image = read_image(path)
    write_image(image.with_array(image.array.astype(np.uint16) * 257), path)
    assert read_image(path).array.dtype == np.uint16
    _ok(base["runner"].invoke(app, ["check", str(grey), "--workers", "1"]))


@pytest.mark.parametrize("command", ["check", "plan", "train-interactive"])
def test_two_labels_with_one_value_are_refused_in_dataset_json(base, tmp_path, command):
    dataset = _copy(base, "2d", tmp_path)
    spec = json.loads((dataset / "dataset.json").read_text())
    spec["labels"] = {"background": 0, "cell": 0}
    (dataset / "dataset.json").write_text(json.dumps(spec))
    out = tmp_path / "out"
    out.mkdir()
    args = {"check": ["check", str(dataset), "--workers", "1"],
            "plan": ["plan", str(dataset), "-o", str(out / "plans.json"), "--flops", "1e10"],
            "train-interactive": ["train-interactive", str(dataset), "-o", str(out / "im"), "--budget", "2s",
                                  "--grid", "32", "--features", "4,8", "--batch-size", "2"]}[command]
    result = base["runner"].invoke(app, args)
    _assert_one_clear_line(result, "dataset.json", command=command)
    assert "have the same value 0" in result.output
    assert _files_under(out) == []
