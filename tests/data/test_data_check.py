"""`medseg check` on broken copies of real cases: one clear line per problem, exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.data import open_dataset
from medseg.data.check import check_dataset
from medseg.io import Image, read_image, write_image

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BREAKS = ["shifted_origin", "different_shape", "wrong_label_value", "missing_channel", "truncated", "nan_voxel"]


def _dataset(name: str) -> Path:
    if not (SHARED / name / "dataset.json").is_file():
        pytest.skip(f"real-data battery not found at {SHARED}")
    return SHARED / name


def _write_brats_copy(root: Path) -> None:
    """Seven cases cut from the real BraTS volumes (one intact, six to break), in the nnU-Net layout."""
    source = open_dataset(_dataset("brats2013_mini"))
    names = ["intact"] + BREAKS
    for index, name in enumerate(names):
        case = source.cases[index % len(source.cases)]
        z = 50 + 4 * index
        image, label = source.read_image(case), source.read_label(case)
        crop = (slice(None), slice(z, z + 24), slice(90, 150), slice(80, 140))
        for c in range(2):
            write_image(Image(np.ascontiguousarray(image.array[crop][c : c + 1]), image.spacing, image.origin,
                              image.direction), root / "imagesTr" / f"{name}_{c:04d}.nii.gz")
        write_image(Image(np.ascontiguousarray(label.array[crop]), label.spacing, label.origin, label.direction),
                    root / "labelsTr" / f"{name}.nii.gz")
    spec = source.spec.to_nnunet_json()
    spec["numTraining"] = len(names)
    (root / "dataset.json").write_text(json.dumps(spec))


def _break(root: Path) -> dict[str, str]:
    """Apply one defect per case; return case -> the file the problem line must name."""
    images, labels = root / "imagesTr", root / "labelsTr"
    culprit = {}

    path = images / "shifted_origin_0001.nii.gz"
    image = read_image(path)
    image.origin = (image.origin[0] + 5.0, image.origin[1], image.origin[2])
    write_image(image, path)
    culprit["shifted_origin"] = path.name

    path = labels / "different_shape.nii.gz"
    label = read_image(path)
    write_image(Image(np.ascontiguousarray(label.array[:, :, :-1]), label.spacing, label.origin, label.direction),
                path)
    culprit["different_shape"] = path.name

    path = labels / "wrong_label_value.nii.gz"
    label = read_image(path)
    label.array[0, 0, 0, 0] = 7
    write_image(label, path)
    culprit["wrong_label_value"] = path.name

    (images / "missing_channel_0001.nii.gz").unlink()
    culprit["missing_channel"] = "missing_channel_0001.nii.gz"

    path = images / "truncated_0000.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    culprit["truncated"] = path.name

    path = images / "nan_voxel_0000.nii.gz"
    image = read_image(path)
    image.array[0, 3, 4, 5] = np.nan
    write_image(image, path)
    culprit["nan_voxel"] = path.name
    return culprit


EXPECTED_MESSAGE = {
    "shifted_origin": "not on the grid of shifted_origin_0000.nii.gz: origin",
    "different_shape": "not on the grid of different_shape_0000.nii.gz: shape (24, 59, 60) != (24, 60, 60)",
    "wrong_label_value": "label value(s) [7] not in dataset.json labels [0, 1, 2, 3, 4]",
    "missing_channel": "missing channel 1 (T1c)",
    "truncated": "corrupt or truncated",
    "nan_voxel": "1 NaN/Inf voxel(s)",
}


@pytest.mark.slow
def test_each_defect_gets_its_own_line_and_exit_code_2(tmp_path: Path) -> None:
    root = tmp_path / "broken"
    _write_brats_copy(root)
    assert check_dataset(root, workers=1).ok  # the unbroken copy passes
    culprit = _break(root)
    result = CliRunner().invoke(app, ["check", str(root), "--workers", "1"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if "(fix: " in line]
    assert len(lines) == len(BREAKS), result.output
    for name in BREAKS:
        matching = [line for line in lines if culprit[name] in line]
        assert len(matching) == 1, (name, result.output)
        assert EXPECTED_MESSAGE[name] in matching[0], matching[0]
    assert not any("intact" in line for line in lines)
    assert "7 cases checked, 6 problem(s)" in result.output


def test_png_dataset_defects(tmp_path: Path) -> None:
    """Broken copies of ISBI EM cases: a label value 255 and an extra channel file, and a stray file."""
    source = _dataset("isbi2012_em")
    root = tmp_path / "em"
    for case_id in ("em_000", "em_001", "em_002"):
        for sub, name in (("imagesTr", f"{case_id}_0000.png"), ("labelsTr", f"{case_id}.png")):
            (root / sub).mkdir(parents=True, exist_ok=True)
            (root / sub / name).write_bytes((source / sub / name).read_bytes())
    spec = json.loads((source / "dataset.json").read_text())
    spec["numTraining"] = 3
    (root / "dataset.json").write_text(json.dumps(spec))
    assert check_dataset(root, workers=1).ok
    label = read_image(root / "labelsTr" / "em_001.png")
    label.array[label.array == 1] = 255
    write_image(label, root / "labelsTr" / "em_001.png")
    (root / "imagesTr" / "em_002_0001.png").write_bytes((root / "imagesTr" / "em_002_0000.png").read_bytes())
    (root / "imagesTr" / "notes.txt").write_text("stray")
    report = check_dataset(root, workers=1)
    by_file = {p.path.name: str(p) for p in report.problems}
    assert len(report.problems) == 3 == len(by_file), report.problems
    assert "label value(s) [255] not in dataset.json labels [0, 1]" in by_file["em_001.png"]
    assert "channel index 1 but dataset.json declares 1 channel(s)" in by_file["em_002_0001.png"]
    assert "file matches no case name pattern" in by_file["notes.txt"]


def test_instance_maps_missing_misgridded_or_disagreeing_get_a_line_each(tmp_path: Path) -> None:
    """MoNuSeg's instancesTr: a missing instance file, one on another grid, one whose objects leave labelled
    pixels out; `medseg check` names each file, exit code 2, and `medseg plan` refuses the dataset too."""
    source = _dataset("monuseg")
    root = tmp_path / "nuclei"
    ids = ["monuseg_000", "monuseg_001", "monuseg_002", "monuseg_003"]
    for case_id in ids:
        for sub, name in (("imagesTr", f"{case_id}_0000.png"), ("labelsTr", f"{case_id}.png"),
                          ("instancesTr", f"{case_id}.png")):
            (root / sub).mkdir(parents=True, exist_ok=True)
            (root / sub / name).write_bytes((source / sub / name).read_bytes())
    spec = json.loads((source / "dataset.json").read_text())
    spec["numTraining"] = len(ids)
    (root / "dataset.json").write_text(json.dumps(spec))
    assert check_dataset(root, workers=1).ok
    (root / "instancesTr" / "monuseg_001.png").unlink()
    cut = read_image(root / "instancesTr" / "monuseg_002.png")
    write_image(Image(np.ascontiguousarray(cut.array[:, :-8]), cut.spacing, cut.origin, cut.direction),
                root / "instancesTr" / "monuseg_002.png")
    holes = read_image(root / "instancesTr" / "monuseg_003.png")
    holes.array[holes.array == holes.array.max()] = 0  # one nucleus of the label has no instance
    write_image(holes, root / "instancesTr" / "monuseg_003.png")
    result = CliRunner().invoke(app, ["check", str(root), "--workers", "1"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if "(fix: " in line]
    assert len(lines) == 3, result.output
    assert any("instancesTr/monuseg_001.png" in line and "instancesTr file missing" in line for line in lines)
    assert any("monuseg_002.png" in line and "not on the grid" in line for line in lines)
    assert any("monuseg_003.png" in line and "disagree on the foreground" in line for line in lines)
    plan = CliRunner().invoke(app, ["plan", str(root), "-o", str(tmp_path / "plans.json")])
    assert plan.exit_code == 2 and not (tmp_path / "plans.json").exists(), plan.output


@pytest.mark.slow
@pytest.mark.parametrize("name", ["isbi2012_em", "drive", "cvc_clinicdb", "brats2013_mini"])
def test_real_datasets_pass(name: str) -> None:
    result = CliRunner().invoke(app, ["check", str(_dataset(name))])
    assert result.exit_code == 0, result.output
    assert "no problems" in result.output
