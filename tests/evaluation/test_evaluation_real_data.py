"""``medseg evaluate`` end to end on the real-data battery: DRIVE with its field of view as ROI, BraTS 2013 with
the three BraTS regions. Prediction folders are built in tmp_path by perturbing the reference labels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner


def _dataset(shared_data: Path, name: str) -> Path:
    """``shared_data`` is the conftest fixture (skips when ../shared/data is absent)."""
    if not (shared_data / name / "dataset.json").is_file():
        pytest.skip(f"{name} not found in the real-data battery at {shared_data}")
    return shared_data / name


def _run(*args: str):
    from medseg.cli.app import app

    return CliRunner().invoke(app, ["evaluate", *args])


def _perturbed_folder(labels_dir: Path, out: Path, perturb) -> Path:
    from medseg.io import read_image, write_image

    out.mkdir()
    for path in sorted(labels_dir.iterdir()):
        image = read_image(path)
        write_image(image.with_array(perturb(image.array[0], path.name)[None].astype(image.array.dtype)),
                    out / path.name)
    return out


def _read_csv(path: Path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_evaluate_drive_inside_the_field_of_view(tmp_path, shared_data):
    drive = _dataset(shared_data, "drive")

    def perturb(vessels, name):
        grown = ndimage.binary_dilation(vessels > 0) if int(name[6:8]) % 2 else vessels > 0
        return grown & (np.random.default_rng(int(name[6:8])).random(vessels.shape) > 0.05)

    pred = _perturbed_folder(drive / "labelsTr", tmp_path / "pred", perturb)
    out = tmp_path / "eval"
    result = _run(str(pred), str(drive / "labelsTr"), "--roi", str(drive / "fovTr"), "-o", str(out),
                  "--metrics", "dice,precision,recall,specificity,accuracy,hd95,assd,nsd,cldice", "--workers", "2")
    assert result.exit_code == 0, result.output
    rows = _read_csv(out / "metrics.csv")
    assert len(rows) == 20 and {r["class"] for r in rows} == {"1"}
    summary = json.loads((out / "summary.json").read_text())
    dice = summary["metrics"]["1"]["dice"]
    assert 0.7 < dice["mean"] < 0.99 and dice["ci_low"] <= dice["mean"] <= dice["ci_high"]
    assert dice["n"] == 20 and dice["n_finite"] == 20
    assert sorted(p.name for p in (out / "plots").iterdir()) == sorted(
        f"{m}.png" for m in ("dice", "precision", "recall", "specificity", "accuracy", "hd95", "assd", "nsd",
                             "cldice"))
    assert not list(out.rglob(".*part*")), "temporary files left behind"
    # one case recomputed directly: the ROI restricts TN to the field of view
    import medseg.metrics as M
    from medseg.io import read_image

    ref = read_image(drive / "labelsTr" / "drive_21.png").array[0] > 0
    fov = read_image(drive / "fovTr" / "drive_21.png").array[0] > 0
    mine = read_image(pred / "drive_21.png").array[0] > 0
    c = M.confusion(mine, ref, fov)
    row = next(r for r in rows if r["case"] == "drive_21")
    assert float(row["accuracy"]) == pytest.approx(M.accuracy(c))
    assert float(row["specificity"]) == pytest.approx(M.specificity(c))
    assert float(row["specificity"]) != pytest.approx(M.specificity(M.confusion(mine & fov, ref & fov)))


@pytest.mark.slow
def test_evaluate_brats_regions_from_dataset_json(tmp_path, shared_data):
    brats = _dataset(shared_data, "brats2013_mini")

    def perturb(labels, name):
        moved = np.roll(labels, 2, axis=2)
        moved[(moved == 3) & (np.arange(moved.shape[0])[:, None, None] % 7 == 0)] = 1
        return moved

    pred = _perturbed_folder(brats / "labelsTr", tmp_path / "pred", perturb)
    out = tmp_path / "eval"
    result = _run(str(pred), str(brats / "labelsTr"), "--regions", "dataset", "-o", str(out), "--workers", "2")
    assert result.exit_code == 0, result.output
    rows = _read_csv(out / "metrics.csv")
    assert {r["class"] for r in rows} == {"whole_tumor", "tumor_core", "enhancing_tumor"}
    assert len(rows) == 12
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"]["whole_tumor"] == [1, 2, 3, 4]
    whole = summary["metrics"]["whole_tumor"]
    # a 2-voxel shift of 1 mm voxels: HD95 of exactly 2 mm, Dice high but not 1
    assert whole["hd95"]["median"] == pytest.approx(2.0)
    assert 0.8 < whole["dice"]["mean"] < 1.0
    assert len(list((out / "plots").glob("*.png"))) == 13
    explicit = _run(str(pred), str(brats / "labelsTr"), "--regions", "wt=1,2,3,4", "-o", str(tmp_path / "e2"),
                    "--metrics", "dice", "--no-plots", "--workers", "1")
    assert explicit.exit_code == 0, explicit.output
    wt = [float(r["dice"]) for r in _read_csv(tmp_path / "e2" / "metrics.csv")]
    assert wt == pytest.approx([float(r["dice"]) for r in rows if r["class"] == "whole_tumor"])


def test_instance_maps_of_monuseg_score_merged_nuclei_below_their_own_instances(shared_data, tmp_path):
    """--instances on MoNuSeg: instancesTr against itself is perfect; connected components of the semantic mask
    (touching nuclei merged) keep Dice 1 on the foreground but lose PQ and AJI; the figures are the metrics
    module's own (AJI as in Kumar et al., PQ matched at IoU 0.5)."""
    from medseg.io import read_image, write_image
    from medseg.metrics import aggregated_jaccard, instance_metrics, instance_overlap, label_instances
    from medseg.metrics import match_instances

    root = _dataset(shared_data, "monuseg")
    names = sorted(p.name for p in (root / "instancesTr").iterdir())[:3]
    reference, components = tmp_path / "ref", tmp_path / "cc"
    reference.mkdir(), components.mkdir()
    expected = []
    for name in names:
        (reference / name).symlink_to(root / "instancesTr" / name)
        label, instances = read_image(root / "labelsTr" / name), read_image(root / "instancesTr" / name).array[0]
        assert ((instances > 0) == (label.array[0] > 0)).all()  # the two files agree on the nuclei
        merged = label_instances(label.array[0] > 0).astype(np.uint16)
        write_image(label.with_array(merged[None]), components / name)
        overlap = instance_overlap(merged, instances)
        expected.append((instance_metrics(match_instances(overlap, 0.5))["pq"], aggregated_jaccard(overlap)))

    result = _run(str(reference), str(reference), "-o", str(tmp_path / "self"), "--instances", "--no-plots")
    assert result.exit_code == 0, result.output
    perfect = json.loads((tmp_path / "self" / "summary.json").read_text())["metrics"]["instances"]
    assert all(perfect[m]["mean"] == 1.0 for m in ("pq", "detection_f1", "aji", "dice", "sq", "rq"))

    result = _run(str(components), str(reference), "-o", str(tmp_path / "eval"), "--instances", "--no-plots")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("instances: pq ")
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())["metrics"]["instances"]
    assert summary["dice"]["mean"] == 1.0
    assert summary["pq"]["mean"] == pytest.approx(np.mean([e[0] for e in expected]))
    assert summary["aji"]["mean"] == pytest.approx(np.mean([e[1] for e in expected]))
    assert summary["aji"]["mean"] < 0.95 and summary["pq"]["mean"] < 0.95
    rows = _read_csv(tmp_path / "eval" / "metrics.csv")
    assert [r["class"] for r in rows] == ["instances"] * 3

    bad = _run(str(components), str(reference), "-o", str(tmp_path / "bad"), "--instances", "--labels", "1")
    assert bad.exit_code == 2 and "drop --labels" in bad.output
