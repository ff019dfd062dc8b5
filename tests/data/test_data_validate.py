"""medseg.data.validate: one read per case shared by check and the pipeline, the dataset record in plans, and
the dataset.json field types."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from medseg.config import DatasetSpec
from medseg.data import open_dataset
from medseg.data.check import check_case
from medseg.data.validate import (check_plan_record, dataset_record, read_case, validate_cases,
                                  validated_case)
from medseg.errors import MedsegError
from medseg.io import Image, read_image, write_image


def _dataset(root: Path, cases: int = 3, channels: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for index in range(cases):
        for c in range(channels):
            array = rng.normal(size=(1, 4, 10, 12)).astype(np.float32)
            write_image(Image(array, (2.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3)),
                        root / "imagesTr" / f"case{index}_{c:04d}.nii.gz")
        label = (rng.random((1, 4, 10, 12)) > 0.7).astype(np.uint8)
        write_image(Image(label, (2.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3)),
                    root / "labelsTr" / f"case{index}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "name": "Tiny", "channel_names": {str(c): f"m{c}" for c in range(channels)},
        "labels": {"background": 0, "lesion": 1}, "numTraining": cases, "file_ending": ".nii.gz"}))
    return root


def test_validated_case_reads_the_same_arrays_as_the_dataset_and_stacks_channels(tmp_path):
    dataset = open_dataset(_dataset(tmp_path))
    case = dataset.cases[1]
    image, label, extras = validated_case(dataset, case)
    assert image.array.shape == (2, 4, 10, 12) and label.array.shape == (1, 4, 10, 12) and extras == {}
    np.testing.assert_array_equal(image.array, dataset.read_image(case).array)
    np.testing.assert_array_equal(label.array, dataset.read_label(case).array)
    assert image.metadata["source_files"] == [str(p) for p in case.image_files]


def test_check_case_and_read_case_report_the_same_problems(tmp_path):
    root = _dataset(tmp_path)
    path = root / "labelsTr" / "case0.nii.gz"
    label = read_image(path)
    write_image(Image(label.array[:, :, :-1].copy(), label.spacing, label.origin, label.direction), path)
    dataset = open_dataset(root)
    problems = check_case(dataset, dataset.cases[0])
    assert problems == read_case(dataset, dataset.cases[0]).problems
    assert len(problems) == 1 and problems[0].path == path and "not on the grid" in problems[0].message
    with pytest.raises(MedsegError, match="case0.nii.gz: not on the grid.*fix:.*medseg check"):
        validated_case(dataset, dataset.cases[0])


def test_validate_cases_names_the_first_problem_and_counts_the_rest(tmp_path):
    root = _dataset(tmp_path)
    for index in (0, 2):
        path = root / "labelsTr" / f"case{index}.nii.gz"
        label = read_image(path)
        array = label.array.copy()
        array[0, 0, 0, 0] = 7
        write_image(label.with_array(array), path)
    with pytest.raises(MedsegError, match=r"case0.nii.gz: label value\(s\) \[7\].*and 1 more problem"):
        validate_cases(open_dataset(root), workers=1)


def test_plan_record_matches_until_a_file_changes(tmp_path):
    root = _dataset(tmp_path)
    dataset = open_dataset(root)
    record = dataset_record(dataset, validated=True)
    assert check_plan_record(record, dataset, tmp_path / "plans.json") is True
    assert check_plan_record(dataset_record(dataset, validated=False), dataset, None) is False
    path = root / "imagesTr" / "case1_0000.nii.gz"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert check_plan_record(record, open_dataset(root), None) is False  # changed: validate again


def test_plan_record_refuses_another_dataset_and_warns_without_a_record(tmp_path, caplog):
    first = open_dataset(_dataset(tmp_path / "a"))
    other = _dataset(tmp_path / "b")
    data = json.loads((other / "dataset.json").read_text())
    data["labels"] = {"background": 0, "tumour": 1}
    (other / "dataset.json").write_text(json.dumps(data))
    record = dataset_record(first, validated=True)
    with pytest.raises(MedsegError, match=r"plans.json: the plan was made for another dataset: labels.*medseg plan"):
        check_plan_record(record, open_dataset(other), Path("plans.json"))
    fewer = _dataset(tmp_path / "c", cases=2)
    with pytest.raises(MedsegError, match="another set of cases"):
        check_plan_record(record, open_dataset(fewer), Path("plans.json"))
    with caplog.at_level("WARNING"):
        assert check_plan_record(None, first, Path("old.json")) is False
    assert "does not record which dataset" in caplog.text


def test_preprocess_does_not_read_the_cases_twice_after_plan(tmp_path, monkeypatch):
    """A plan made by reading and checking every case lets preprocess skip its validation pass while the files
    are unchanged; after a change it validates first, and a bad case leaves no cache."""
    from medseg.planning.service import make_plan
    from medseg.preprocess import pipeline

    root = _dataset(tmp_path / "ds")
    plan = make_plan(root, flops_per_second=1e10)
    assert plan.dataset["files_digest"]
    passes = []
    monkeypatch.setattr(pipeline, "validate_cases", lambda *a, **k: passes.append(1))
    pipeline.preprocess_dataset(root, plan, "3d_fullres", tmp_path / "cache", workers=1)
    assert passes == []
    monkeypatch.undo()
    path = root / "labelsTr" / "case2.nii.gz"
    label = read_image(path)
    write_image(label.with_array(label.array.astype(np.float32) + 0.5), path)
    with pytest.raises(MedsegError, match="case2.nii.gz: label holds non-integer"):
        pipeline.preprocess_dataset(root, plan, "3d_fullres", tmp_path / "cache2", workers=1)
    assert not (tmp_path / "cache2").exists()


@pytest.mark.parametrize("field, value, message", [
    ("numTraining", 2.5, "numTraining is 2.5"),
    ("numTraining", -3, "numTraining is -3"),
    ("numTraining", "ten", "numTraining is 'ten'"),
    ("numTraining", True, "numTraining is True"),
    ("labels", ["background", "organ"], "dataset.json has no .labels. object"),
    ("labels", {"background": 0, "organ": 1.5}, "label 'organ' has value 1.5"),
    ("labels", {"background": 0, "organ": None}, "label 'organ' has value None"),
    ("channel_names", ["CT"], "dataset.json has neither .channel_names. nor .modality."),
    ("channel_names", {"0": 3}, "channel_names entry '0' is 3"),
    ("channel_names", {"0": "CT", "2": "PET"}, "channel keys .* are not 0, 1"),
    ("file_ending", 5, "file_ending is 5"),
    ("file_ending", "nii.gz", "file_ending is 'nii.gz'"),
    ("name", ["x"], "name is"),
    ("regions_commonly_scored", {"whole": 1}, "regions_commonly_scored is"),
])
def test_dataset_json_fields_of_the_wrong_type_name_the_file_and_field(field, value, message):
    data = {"name": "x", "channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1},
            "numTraining": 3, "file_ending": ".nii.gz", field: value}
    with pytest.raises(MedsegError, match=f"dataset.json: {message}.*fix:"):
        DatasetSpec.from_dataset_json(data, Path("dataset.json"))


def test_dataset_json_integral_float_count_and_msd_labels_are_accepted():
    spec = DatasetSpec.from_dataset_json({"modality": {"0": "MRI"}, "labels": {"0": "background", "1": "edema"},
                                          "numTraining": 4.0}, Path("d/dataset.json"))
    assert spec.num_training == 4 and spec.labels == {"background": 0, "edema": 1}


@pytest.mark.parametrize("defect", ["num_training", "stray_file"])
def test_the_pipeline_refuses_what_check_refuses_of_the_dataset_as_a_whole(tmp_path, defect):
    import json

    from typer.testing import CliRunner

    from medseg.cli.app import app

    runner = CliRunner()
    dataset = tmp_path / "shapes"
    assert runner.invoke(app, ["example-data", str(dataset), "--cases", "3"]).exit_code == 0
    if defect == "num_training":
        spec = json.loads((dataset / "dataset.json").read_text())
        spec["numTraining"] = 5
        (dataset / "dataset.json").write_text(json.dumps(spec))
        named, message = dataset / "dataset.json", "numTraining is 5 but 3 cases were found"
    else:
        named, message = dataset / "imagesTr" / "notes.txt", "file matches no case name pattern"
        named.write_text("scanner notes")
    for command in (["check", str(dataset)], ["fingerprint", str(dataset), "-o", str(tmp_path / "f.json")],
                    ["plan", str(dataset), "-o", str(tmp_path / "p.json"), "--flops", "1e10"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        assert str(named) in result.output and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "f.json").exists() and not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("command", [["check"], ["fingerprint", "-o", "{out}/f.json"], ["train", "-c", "2d", "-o", "{out}/m"],
                                     ["train-interactive", "-o", "{out}/i", "--budget", "2s"],
                                     ["eval-interactive", "--baselines", "random_walker", "-o", "{out}/e"]])
def test_a_dataset_without_training_cases_is_one_line_naming_imagestr(tmp_path, command):
    import json

    from typer.testing import CliRunner

    from medseg.cli.app import app

    dataset = tmp_path / "empty"
    (dataset / "imagesTr").mkdir(parents=True)
    (dataset / "labelsTr").mkdir()
    (dataset / "dataset.json").write_text(json.dumps({"channel_names": {"0": "EM"}, "file_ending": ".png",
                                                      "labels": {"background": 0, "cell": 1}, "numTraining": 0}))
    out = tmp_path / "out"
    args = [command[0], str(dataset), *[a.format(out=out) for a in command[1:]]]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"{dataset / 'imagesTr'}: the dataset has no training cases" in result.output
    assert "Traceback" not in result.output and not out.exists()
