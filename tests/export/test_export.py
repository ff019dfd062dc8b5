"""``medseg export`` and ``medseg predict --engine onnxruntime``: exported networks pass onnx.checker, their
onnxruntime logits match torch's, and the onnxruntime pipeline labels real images as the torch pipeline does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.config.onnx_folder import read_pipeline
from medseg.io import read_image
from medseg.weights_file import sha256_file


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def onnx_logits_match_torch(model: Path, exported: Path, fold: str, shape: tuple[int, ...]) -> float:
    """Max |onnxruntime - torch| logits of ``fold`` on a random input, run by onnxruntime directly (not by the
    adapter under test); the file passes onnx.checker."""
    import onnx
    import onnxruntime as ort

    from medseg.nets.from_folder import load_network

    path = exported / f"fold_{fold}.onnx"
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = load_network(model, fold)(x).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    assert got.shape == expected.shape
    return float(np.abs(got - expected).max())


def test_a_folder_that_is_not_a_model_exits_2(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    line = one_error_line(invoke("export", tmp_path / "data", "-o", tmp_path / "out"))
    assert "not a medseg model folder" in line
    assert not (tmp_path / "out").exists()


def test_an_existing_output_needs_overwrite_and_is_an_export(em_model, tmp_path: Path) -> None:
    _, model = em_model
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    assert "exists already" in one_error_line(invoke("export", model, "-o", tmp_path / "out"))
    assert "not an export" in one_error_line(invoke("export", model, "-o", tmp_path / "out", "--overwrite"))
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_a_trained_2d_model_exports_and_predicts_as_torch(tmp_path: Path) -> None:
    from tests.training.conftest import tiny_dataset_and_plan

    dataset, plans = tiny_dataset_and_plan(tmp_path)
    model, exported = tmp_path / "m", tmp_path / "onnx"
    trained = invoke("train", dataset, "-c", "2d", "-f", "0", "-o", model, "-p", plans, "--max-iterations", "6",
                     "--iterations-per-epoch", "3", "--workers", "0")
    assert trained.exit_code == 0, trained.output
    refused = invoke("export", model, "-o", exported, "--tolerance", "1e-12")
    assert "differ from torch's" in one_error_line(refused) and not exported.exists()  # nothing half-written

    result = invoke("export", model, "-o", exported)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in exported.iterdir()) == ["fold_0.onnx", "pipeline.json"]
    pipeline = read_pipeline(exported)
    plan = json.loads((model / "plans.json").read_text())["configurations"]["2d"]
    assert pipeline.config.patch_size == plan["patch_size"] == [32, 32]
    assert pipeline.config.target_spacing == plan["target_spacing"] and pipeline.label_values == [0, 1, 2]
    assert pipeline.mirror_axes == [0, 1] and pipeline.batch == 1 and pipeline.folds[0].sha256 == \
        sha256_file(exported / "fold_0.onnx")
    assert pipeline.folds[0].max_abs_diff < 1e-4
    assert onnx_logits_match_torch(model, exported, "0", (1, 1, 32, 32)) < 1e-4
    assert "exists already" in one_error_line(invoke("export", model, "-o", exported))

    image = dataset / "imagesTr" / "shapes_000_0000.nii.gz"
    torch_out, onnx_out = tmp_path / "torch", tmp_path / "ort"
    assert invoke("predict", "-i", image, "-o", torch_out, "-m", model).exit_code == 0
    result = invoke("predict", "-i", image, "-o", onnx_out, "-m", exported, "--engine", "onnxruntime")
    assert result.exit_code == 0, result.output
    a, b = read_image(torch_out / "shapes_000.nii.gz").array, read_image(onnx_out / "shapes_000.nii.gz").array
    assert a.shape == b.shape and np.mean(a == b) >= 0.999 and len(np.unique(a)) > 1
    assert "export it first" in one_error_line(invoke("predict", "-i", image, "-o", tmp_path / "x", "-m", model,
                                                      "--engine", "onnxruntime"))


def agreement(model: Path, exported: Path, image_file: Path, **options) -> float:
    """The fraction of voxels where the onnxruntime pipeline's labels of ``image_file`` equal torch's."""
    from medseg.inference.onnx_engine import onnx_predictor
    from medseg.inference.predictor import Predictor

    image = read_image(image_file)
    expected = Predictor.from_folder(model, **options).predict(image).array
    got = onnx_predictor(exported, **options).predict(image).array
    assert got.shape == expected.shape == (1, *image.spatial_shape) and len(np.unique(expected)) > 1
    return float(np.mean(got == expected))


@pytest.mark.slow
def test_em_crop_labels_agree_with_a_fixed_batch_of_3(em_model, tmp_path: Path) -> None:
    from medseg.export import export_model

    dataset, model = em_model
    report = export_model(model, tmp_path / "onnx", batch=3)  # 2D mirroring gives chunks of 4: split and padded
    assert report.batch == 3 and report.folds[0].max_abs_diff < 1e-4
    assert agreement(model, tmp_path / "onnx", dataset / "imagesTr" / "em_000_0000.png") >= 0.999


@pytest.mark.slow
def test_hippocampus_labels_agree_with_dynamic_shapes_and_two_folds(hippocampus_model, tmp_path: Path) -> None:
    from medseg.export import export_model
    from tests.export.conftest import SHARED_DATA

    _, model = hippocampus_model
    report = export_model(model, tmp_path / "onnx", dynamic=True)
    assert report.batch is None and report.dynamic_spatial and [f.fold for f in report.folds] == ["0", "1"]
    patch = read_pipeline(tmp_path / "onnx").config.patch_size
    for fold in ("0", "1"):
        assert onnx_logits_match_torch(model, tmp_path / "onnx", fold, (3, 1, *patch)) < 1e-4  # any batch
    assert onnx_logits_match_torch(model, tmp_path / "onnx", "0", (1, 1, *[2 * p for p in patch])) < 1e-4  # size
    held_out = SHARED_DATA / "hippocampus" / "imagesTr" / "hippocampus_004_0000.nii.gz"
    assert agreement(model, tmp_path / "onnx", held_out) >= 0.999
