"""The bad-input matrix (issue 16): every command that reads user files x every class of bad input.

Each cell breaks a fresh copy of a tiny dataset (2D PNG, 3D NIfTI or MSD, made here) in one way, runs the real CLI
in-process and asserts: exit code 2, one line that names the offending file and carries a fix, no traceback, and
nothing left in the output folder. Cells that cannot apply are listed in ``NOT_APPLICABLE`` with the reason and
reported as skipped.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.io import Image, read_image, write_image

CASES = ["c0", "c1", "c2", "c3"]
BAD = "c1"  # the broken case: eval-interactive reads c0 first, so a lazy reader would have done work already

# --------------------------------------------------------------------------------------------- tiny datasets


def _disc(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n) for n in shape[-2:]], indexing="ij")
    centre = rng.uniform(0.35, 0.65, 2) * np.array(shape[-2:])
    radius = 0.22 * min(shape[-2:])
    disc = ((grids[0] - centre[0]) ** 2 + (grids[1] - centre[1]) ** 2) < radius**2
    return np.broadcast_to(disc, shape).copy()


def _write_2d(root: Path) -> None:
    rng = np.random.default_rng(0)
    for case in CASES:
        label = _disc((48, 48), rng).astype(np.uint8)
        image = (60 + 120 * label + rng.integers(0, 40, label.shape)).astype(np.uint8)
        write_image(Image.from_array(image), root / "imagesTr" / f"{case}_0000.png")
        write_image(Image.from_array(label), root / "labelsTr" / f"{case}.png")
    _dataset_json(root, "Tiny2D", {"0": "EM"}, {"background": 0, "cell": 1}, ".png")


def _volume(rng: np.random.Generator) -> tuple[Image, Image]:
    label = _disc((6, 20, 20), rng).astype(np.uint8)
    image = (label * 2.0 + rng.normal(0, 0.3, label.shape) + 1.0).astype(np.float32)
    geometry = dict(spacing=(3.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=np.eye(3))
    return Image(image[None], **geometry), Image(label[None], **geometry)


def _write_3d(root: Path) -> None:
    rng = np.random.default_rng(1)
    for case in CASES:
        image, label = _volume(rng)
        write_image(image, root / "imagesTr" / f"{case}_0000.nii.gz")
        write_image(label, root / "labelsTr" / f"{case}.nii.gz")
    _dataset_json(root, "Tiny3D", {"0": "MRI"}, {"background": 0, "organ": 1}, ".nii.gz")


def _write_msd(root: Path) -> None:
    rng = np.random.default_rng(2)
    for case in CASES:
        image, label = _volume(rng)
        write_image(image, root / "imagesTr" / f"{case}.nii.gz")
        write_image(label, root / "labelsTr" / f"{case}.nii.gz")
    data = {"name": "TinyMSD", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "organ"},
            "numTraining": len(CASES), "tensorImageSize": "4D",
            "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in CASES],
            "test": []}
    (root / "dataset.json").write_text(json.dumps(data))


def _dataset_json(root: Path, name: str, channels: dict, labels: dict, ending: str) -> None:
    data = {"name": name, "channel_names": channels, "labels": labels, "numTraining": len(CASES),
            "file_ending": ending}
    (root / "dataset.json").write_text(json.dumps(data))


WRITERS = {"2d": _write_2d, "3d": _write_3d, "msd": _write_msd}


def _image_path(root: Path, kind: str, case: str = BAD) -> Path:
    if kind == "msd":
        return root / "imagesTr" / f"{case}.nii.gz"
    return root / "imagesTr" / f"{case}_0000{'.png' if kind == '2d' else '.nii.gz'}"


def _label_path(root: Path, kind: str, case: str = BAD) -> Path:
    return root / "labelsTr" / f"{case}{'.png' if kind == '2d' else '.nii.gz'}"


def _edit_json(root: Path, **changes) -> str:
    path = root / "dataset.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))
    return "dataset.json"


# ------------------------------------------------------------------------------------------ bad-input classes
# name -> (dataset kinds it can be made in, break(root, kind) -> name of the file the error must name)


def _label_other_grid(root: Path, kind: str) -> str:
    path = _label_path(root, kind)
    label = read_image(path)
    write_image(Image(np.ascontiguousarray(label.array[..., :-4]), label.spacing, label.origin, label.direction),
                path)
    return path.name


def _label_shifted_origin(root: Path, kind: str) -> str:
    path = _label_path(root, kind)
    label = read_image(path)
    label.origin = (label.origin[0] + 7.0, *label.origin[1:])
    write_image(label, path)
    return path.name


def _nan_voxels(root: Path, kind: str) -> str:
    path = _image_path(root, kind)
    image = read_image(path)
    array = image.array.astype(np.float32)
    array[0, 2, 5, 5] = np.nan
    write_image(image.with_array(array), path)
    return path.name


def _rgb_in_grey(root: Path, kind: str) -> str:
    path = _image_path(root, kind)
    grey = read_image(path).array[0]
    write_image(Image.from_array(np.stack([grey, grey // 2, grey // 3]), channel_axis=True), path)
    return path.name


def _nifti_4d_in_3d(root: Path, kind: str) -> str:
    path = _image_path(root, kind)
    image = read_image(path)
    write_image(image.with_array(np.concatenate([image.array, image.array * 2])), path)
    return path.name


def _truncated(root: Path, kind: str) -> str:
    path = _image_path(root, kind)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path.name


def _undeclared_label(root: Path, kind: str) -> str:
    path = _label_path(root, kind)
    label = read_image(path)
    array = label.array.copy()
    array[(0,) + (1,) * (array.ndim - 1)] = 5
    write_image(label.with_array(array), path)
    return path.name


def _non_integer_label(root: Path, kind: str) -> str:
    path = _label_path(root, kind)
    label = read_image(path)
    write_image(label.with_array(label.array.astype(np.float32) * 0.5), path)
    return path.name


def _missing_label(root: Path, kind: str) -> str:
    path = _label_path(root, kind)
    path.unlink()
    return path.name


def _missing_channel(root: Path, kind: str) -> str:
    path = _image_path(root, kind)
    path.unlink()
    return path.name


BAD_INPUTS: dict[str, tuple[tuple[str, ...], Callable[[Path, str], str]]] = {
    "label_other_grid": (("2d", "msd"), _label_other_grid),
    "label_shifted_origin": (("3d", "msd"), _label_shifted_origin),
    "nan_voxels": (("3d", "msd"), _nan_voxels),
    "rgb_in_grey": (("2d",), _rgb_in_grey),
    "nifti_4d_in_3d": (("3d", "msd"), _nifti_4d_in_3d),
    "truncated_file": (("3d", "2d", "msd"), _truncated),
    "undeclared_label": (("2d", "msd"), _undeclared_label),
    "non_integer_label": (("3d", "msd"), _non_integer_label),
    "missing_label": (("2d", "msd"), _missing_label),
    "missing_channel": (("2d",), _missing_channel),
    "numtraining_not_integer": (("2d", "msd"), lambda root, kind: _edit_json(root, numTraining=2.5)),
    "numtraining_negative": (("2d", "msd"), lambda root, kind: _edit_json(root, numTraining=-1)),
    "numtraining_not_a_number": (("2d", "msd"), lambda root, kind: _edit_json(root, numTraining="four")),
    "label_value_not_integer_in_json": (("2d", "msd"), lambda root, kind: _edit_json(
        root, labels={"background": 0, "cell": "one"} if kind != "msd" else {"0": "background", "1": 1})),
    "channel_names_not_object": (("2d", "msd"), lambda root, kind: _edit_json(
        root, **{"channel_names" if kind != "msd" else "modality": ["EM"]})),
    "file_ending_not_text": (("2d", "msd"), lambda root, kind: _edit_json(root, file_ending=5)),
}

# ----------------------------------------------------------------------------------------------- commands
# name -> (dataset kinds it reads, args(dataset, out, fixtures) -> CLI arguments)


def _args_check(ds: Path, out: Path, fx: dict) -> list[str]:
    return ["check", str(ds), "--workers", "1"]


def _args_fingerprint(ds: Path, out: Path, fx: dict) -> list[str]:
    return ["fingerprint", str(ds), "-o", str(out / "fingerprint.json"), "--workers", "1"]


def _args_convert(ds: Path, out: Path, fx: dict) -> list[str]:
    return ["convert", str(ds), str(out / "converted")]


def _args_plan(ds: Path, out: Path, fx: dict) -> list[str]:
    return ["plan", str(ds), "-o", str(out / "plans.json"), "--flops", "1e10"]


def _args_preprocess(ds: Path, out: Path, fx: dict) -> list[str]:
    return ["preprocess", str(ds), "-c", "2d", "-p", str(fx["plans"]), "-o", str(out / "preprocessed"),
            "--workers", "1"]


def _args_train(ds: Path, out: Path, fx: dict) -> list[str]:
    return ["train", str(ds), "-c", "2d", "-f", "0", "-p", str(fx["plans"]), "-o", str(out / "model"),
            "--max-iterations", "1", "--no-validation"]


def _args_predict(ds: Path, out: Path, fx: dict) -> list[str]:
    return ["predict", "-i", str(ds / "imagesTr"), "-o", str(out / "predictions"), "-m", str(fx["model"]),
            "--no-tta"]


def _args_eval_interactive(ds: Path, out: Path, fx: dict) -> list[str]:
    return ["eval-interactive", str(ds), "--baselines", "watershed", "--modes", "clicks", "--max-interactions", "1",
            "-o", str(out / "interactive_eval")]


def _args_train_interactive(ds: Path, out: Path, fx: dict) -> list[str]:
    return ["train-interactive", str(ds), "-o", str(out / "interactive_model"), "--budget", "2s", "--grid", "32",
            "--features", "4,8", "--batch-size", "2"]


def _args_benchmark(ds: Path, out: Path, fx: dict) -> list[str]:
    return ["benchmark", str(ds), "--networks", "unet", "--budget", "2s", "-o", str(out / "bench")]


def _args_classical(ds: Path, out: Path, fx: dict) -> list[str]:
    return ["classical", str(ds), "--method", "otsu", "--tune-cases", "4", "-o", str(out / "classical")]


COMMANDS: dict[str, tuple[tuple[str, ...], Callable[[Path, Path, dict], list[str]]]] = {
    "check": (("2d", "3d", "msd"), _args_check),
    "fingerprint": (("2d", "3d", "msd"), _args_fingerprint),
    "convert": (("msd",), _args_convert),
    "plan": (("2d", "3d", "msd"), _args_plan),
    "preprocess": (("2d", "3d"), _args_preprocess),
    "train": (("2d", "3d"), _args_train),
    "predict": (("2d",), _args_predict),
    "eval-interactive": (("2d", "3d", "msd"), _args_eval_interactive),
    "train-interactive": (("2d", "3d", "msd"), _args_train_interactive),
    "benchmark": (("2d", "3d"), _args_benchmark),
    "classical": (("2d", "3d", "msd"), _args_classical),
}

READS_NO_LABELS = "predict reads images only"
NOT_APPLICABLE: dict[tuple[str, str], str] = {
    **{("predict", name): READS_NO_LABELS for name in ("label_other_grid", "label_shifted_origin", "undeclared_label",
                                                          "non_integer_label", "missing_label")},
    **{("predict", name): "predict -i reads a folder of images, not dataset.json"
       for name in ("numtraining_not_integer", "numtraining_negative", "numtraining_not_a_number",
                    "label_value_not_integer_in_json", "channel_names_not_object", "file_ending_not_text")},
    ("predict", "missing_channel"): "with the image gone there is no case to predict in a folder of images",
    ("predict", "nan_voxels"): "a PNG cannot hold NaN (the model of this matrix is 2D); "
                               "see test_predict_nan_input_is_refused",
    ("predict", "nifti_4d_in_3d"): "the model of this matrix is 2D; rgb_in_grey is predict's channel mismatch",
    ("predict", "label_shifted_origin"): READS_NO_LABELS,
}

# Cells that fail today, each with the reason; strict, so a fix makes the cell fail until its mark is removed.
KNOWN_GAPS: dict[tuple[str, str], str] = {}


def _kind(command: str, bad_input: str) -> str | None:
    """The dataset kind a cell runs on: the first kind of the bad input that the command reads."""
    kinds, _ = BAD_INPUTS[bad_input]
    readable = COMMANDS[command][0]
    return next((k for k in kinds if k in readable), None)


def _cells():
    for command in COMMANDS:
        for bad_input in BAD_INPUTS:
            reason = NOT_APPLICABLE.get((command, bad_input))
            if reason is None and _kind(command, bad_input) is None:
                reason = f"{bad_input} cannot be made in a dataset that {command} reads"
            marks = [pytest.mark.skip(reason=reason)] if reason else []
            if (command, bad_input) in KNOWN_GAPS:
                marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[command, bad_input]))
            yield pytest.param(command, bad_input, id=f"{command}-{bad_input}", marks=marks)


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict:
    """The intact datasets, plans made on each (and on the other, for 'plans for another dataset'), and a tiny 2D
    model trained for two steps (what predict needs)."""
    base = tmp_path_factory.mktemp("bad_input_matrix")
    runner = CliRunner()
    out: dict = {"runner": runner}
    for kind, writer in WRITERS.items():
        writer(base / kind)
        out[kind] = base / kind
    for kind in ("2d", "3d"):
        plans = base / f"plans_{kind}.json"
        _ok(runner.invoke(app, ["plan", str(base / kind), "-o", str(plans), "--flops", "1e10"]))
        out[f"plans_{kind}"] = plans
    model = base / "model_2d"
    _ok(runner.invoke(app, ["train", str(base / "2d"), "-c", "2d", "-f", "all", "-p", str(out["plans_2d"]),
                            "-o", str(model), "--max-iterations", "2", "--iterations-per-epoch", "2",
                            "--no-validation"]))
    out["model"] = model
    return out


def _ok(result) -> None:
    assert result.exit_code == 0, result.output + repr(result.exception)


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")) if folder.exists() else []


def _assert_one_clear_line(result, culprit: str, *, command: str) -> None:
    output = result.output  # stdout and stderr together
    assert result.exit_code == 2, f"exit {result.exit_code}: {output}{result.exception!r}"
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    if command == "check" and len(lines) > 1:  # one line per problem, then the summary
        problem_lines = lines[:-1]
        assert any(culprit in line and "fix:" in line for line in problem_lines), output
        assert all("fix:" in line for line in problem_lines), output
    else:
        assert len(lines) == 1, output
        assert culprit in lines[0] and "fix:" in lines[0], output


# ---------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("command, bad_input", list(_cells()))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(fixtures, tmp_path, command, bad_input):
    kind = _kind(command, bad_input)
    dataset = tmp_path / "dataset"
    shutil.copytree(fixtures[kind], dataset)
    culprit = BAD_INPUTS[bad_input][1](dataset, kind)
    out = tmp_path / "out"
    out.mkdir()
    extra = {"plans": fixtures.get(f"plans_{kind}"), "model": fixtures["model"]}
    result = fixtures["runner"].invoke(app, COMMANDS[command][1](dataset, out, extra))
    _assert_one_clear_line(result, culprit, command=command)
    assert _files_under(out) == [], f"left behind: {_files_under(out)}"


@pytest.mark.parametrize("command", ["preprocess", "train"])
def test_plans_for_another_dataset_are_refused(fixtures, tmp_path, command):
    dataset = tmp_path / "dataset"
    shutil.copytree(fixtures["2d"], dataset)
    other = tmp_path / "other_plans.json"
    shutil.copy(fixtures["plans_3d"], other)
    out = tmp_path / "out"
    out.mkdir()
    result = fixtures["runner"].invoke(app, COMMANDS[command][1](dataset, out, {"plans": other}))
    _assert_one_clear_line(result, "other_plans.json", command=command)
    assert "medseg plan" in result.output
    assert _files_under(out) == []


def test_train_that_plans_itself_refuses_a_bad_case_before_creating_the_model_folder(fixtures, tmp_path):
    dataset = tmp_path / "dataset"
    shutil.copytree(fixtures["2d"], dataset)
    culprit = _label_other_grid(dataset, "2d")
    model = tmp_path / "model"
    result = fixtures["runner"].invoke(app, ["train", str(dataset), "-c", "2d", "-f", "0", "-o", str(model),
                                             "--budget", "5s", "--no-validation"])
    _assert_one_clear_line(result, culprit, command="train")
    assert not model.exists()


def test_plans_without_a_dataset_record_still_work(fixtures, tmp_path, caplog):
    """Plans written before plans recorded their dataset are used, with a warning (and the cases validated)."""
    old = json.loads(fixtures["plans_2d"].read_text())
    old.pop("dataset")
    plans = tmp_path / "old_plans.json"
    plans.write_text(json.dumps(old))
    out = tmp_path / "preprocessed"
    with caplog.at_level("WARNING"):
        result = fixtures["runner"].invoke(app, ["preprocess", str(fixtures["2d"]), "-c", "2d", "-p", str(plans),
                                                 "-o", str(out), "--workers", "1"])
    _ok(result)
    assert "does not record which dataset" in caplog.text
    assert len(list((out / "2d").glob("*.json"))) >= len(CASES)


@pytest.mark.parametrize("bad_prediction", ["nan", "non_integer", "other_grid", "three_channels", "truncated"])
def test_evaluate_refuses_a_bad_prediction(fixtures, tmp_path, bad_prediction):
    reference = fixtures["3d"] / "labelsTr"
    predictions = tmp_path / "predictions"
    shutil.copytree(reference, predictions)
    path = predictions / f"{BAD}.nii.gz"
    label = read_image(path)
    array = label.array.astype(np.float32)
    if bad_prediction == "nan":
        array[0, 1, 2, 3] = np.nan
        write_image(label.with_array(array), path)
    elif bad_prediction == "non_integer":
        write_image(label.with_array(array * 0.5), path)
    elif bad_prediction == "other_grid":
        write_image(Image(np.ascontiguousarray(label.array[..., :-2]), label.spacing, label.origin,
                          label.direction), path)
    elif bad_prediction == "three_channels":
        write_image(label.with_array(np.concatenate([label.array] * 3)), path)
    else:
        path.write_bytes(path.read_bytes()[:100])
    out = tmp_path / "out"
    out.mkdir()
    result = fixtures["runner"].invoke(app, ["evaluate", str(predictions), str(reference), "-o",
                                             str(out / "evaluation"), "--workers", "1", "--no-plots"])
    _assert_one_clear_line(result, path.name, command="evaluate")
    assert _files_under(out) == []


def test_predict_nan_input_is_refused(fixtures, tmp_path):
    """A float image holding NaN (a .npy input) for the 2D model."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    image = read_image(fixtures["2d"] / "imagesTr" / "c0_0000.png")
    array = image.array.astype(np.float32)
    array[0, 3, 3] = np.nan
    write_image(image.with_array(array), inputs / "scan.npy")
    out = tmp_path / "out"
    out.mkdir()
    result = fixtures["runner"].invoke(app, ["predict", "-i", str(inputs), "-o", str(out / "predictions"),
                                             "-m", str(fixtures["model"]), "--no-tta"])
    _assert_one_clear_line(result, "scan.npy", command="predict")
    assert _files_under(out) == []


def test_the_matrix_covers_every_command_that_reads_user_files():
    """A command added to the CLI that reads user files must get a row here (or be listed as not reading any)."""
    from medseg.cli.app import COMMANDS as CLI_COMMANDS

    elsewhere = {
        "demo": "writes its own data", "example-data": "writes its own data", "models": "reads no files",
        "interactive": "the server: uploads are tested in tests/interactive/test_interactive_server.py",
        "find-best": "reads the model folders' validation predictions that train writes, not user files",
        "calibrate": "a model folder's cross-validation predictions and a dataset: tests/trust/test_calibration.py",
        "model upgrade": "model folders, old and damaged: tests/cli/test_model_upgrade.py",
        "export": "reads a model folder, not a dataset: tests/export/test_export.py",
        "import nnunet": "an nnU-Net results folder, damaged and hostile: tests/importers/test_nnunet_import.py",
        "serve": "model folders and a tokens file: tests/serve/test_serve_cli.py; uploads: tests/serve/",
        "dicomweb watch": "a PACS and its state file: tests/dicomweb/test_dicomweb_watch.py",
        "incontext": "a support folder and a target image: tests/incontext/test_incontext_cli.py",
        "train-incontext": "dataset folders and --exclude: tests/incontext/test_incontext_cli.py",
        "segment": "an image, prompts and a model folder: tests/universal/test_universal_model.py",
        "train-universal": "dataset folders, a bad case, an existing run: tests/universal/test_universal_model.py",
        "report": "folders that benchmark and train wrote: tests/benchmark/test_benchmark.py",
        "shift": "datasets, a model folder and its shift reference: tests/trust/test_shift.py",
        "qc": "a model folder with or without CV predictions, a prediction folder: tests/trust/test_qc.py",
        "explain": "a model folder, image files and a region mask: tests/trust/test_explain.py",
        "adapt": "a base model folder, a target dataset and the method's options: tests/adapt/test_finetune.py",
        "pretrain": "dataset and image folders, a plan and the method's options: tests/adapt/test_pretrain.py",
        "model merge": "an adapted folder, missing or not one of deltas: tests/adapt/test_finetune.py",
        "active": "a dataset with an unlabelled case, a folder of another run, bad options: "
                  "tests/active/test_active.py",
        "synth": "folders of label maps, missing, holding an image, and an existing output: "
                 "tests/synth/test_synthseg.py",
        "raters simulate": "a dataset with a bad case, one with raters already, an existing output: "
                           "tests/data/test_raters.py",
        "raters consensus": "a dataset without raters, a rater on another grid: tests/data/test_raters.py",
    }
    covered = set(COMMANDS) | {"evaluate"}
    assert set(CLI_COMMANDS) - set(elsewhere) - covered == set()


def test_plan_refuses_a_fingerprint_of_another_dataset(fixtures, tmp_path):
    runner = fixtures["runner"]
    fingerprint = tmp_path / "fingerprint_3d.json"
    _ok(runner.invoke(app, ["fingerprint", str(fixtures["3d"]), "-o", str(fingerprint), "--workers", "1"]))
    out = tmp_path / "out"
    out.mkdir()
    result = runner.invoke(app, ["plan", str(fixtures["2d"]), "--fingerprint", str(fingerprint), "-o",
                                 str(out / "plans.json"), "--flops", "1e10"])
    _assert_one_clear_line(result, fingerprint.name, command="plan")
    assert _files_under(out) == []
