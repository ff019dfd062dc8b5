"""The universal model end to end on tiny real data (two datasets with different label sets), its partial-label
training, the view each dataset has of the network, and ``medseg segment`` / ``medseg train-universal`` with
good and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.errors import MedsegError
from medseg.io import read_image
from medseg.losses import PartialLabelLoss, create
from medseg.universal.sources import SourceView, UniversalSource, annotated_flags, source_logits
from tests.conftest import shared_subset


class FixedLogits(torch.nn.Module):
    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        assert image.shape[1] == 3  # every dataset reaches the network with three channels
        return self.logits


def test_a_dataset_sees_its_own_classes_and_every_other_class_pooled_into_its_background():
    logits = torch.randn(2, 6, 4, 5)
    source = UniversalSource("B", 1, [1, 2], [3, 4])
    view = SourceView(FixedLogits(logits), source)
    probabilities = torch.softmax(view(torch.randn(2, 1, 4, 5)), 1)
    full = torch.softmax(logits, 1)
    torch.testing.assert_close(probabilities[:, 1:], full[:, [3, 4]])
    torch.testing.assert_close(probabilities[:, 0], full[:, [0, 1, 2, 5]].sum(1))
    assert view.medseg_spec == {"in_channels": 1}


def test_the_loss_of_dataset_a_never_penalises_a_class_that_a_does_not_annotate():
    criterion = PartialLabelLoss(create("nnunet_dice_ce"), mode="marginal")
    source = UniversalSource("A", 1, [1], [1])  # A annotates output 1; outputs 2 and 3 belong to others
    target = torch.randint(0, 2, (2, 1, 8, 8))
    annotated = annotated_flags(source, 4, 2)
    logits = torch.randn(2, 4, 8, 8)
    moved = logits.clone()  # background and class 2 share their mass differently, their sum unchanged
    pooled = torch.logsumexp(logits[:, [0, 2]], 1)
    moved[:, 2] = logits[:, 2] + 3.0
    moved[:, 0] = torch.log((pooled.exp() - moved[:, 2].exp()).clamp_min(1e-30))
    ok = pooled.exp() > moved[:, 2].exp()
    moved[:, 0] = torch.where(ok, moved[:, 0], logits[:, 0])
    moved[:, 2] = torch.where(ok, moved[:, 2], logits[:, 2])
    torch.testing.assert_close(criterion(moved, target, annotated=annotated),
                               criterion(logits, target, annotated=annotated))
    own = logits.clone()
    own[:, 1] += 2.0
    assert not torch.isclose(criterion(own, target, annotated=annotated), criterion(logits, target,
                                                                                     annotated=annotated))
    torch.testing.assert_close(source_logits(logits, [1])[:, 0], torch.logsumexp(logits[:, [0, 2, 3]], 1))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from medseg.universal.training import train_universal

    base = tmp_path_factory.mktemp("universal")
    hippocampus = shared_subset("hippocampus", 6, base / "hippocampus")
    lungs = shared_subset("cxr_lungs", 4, base / "cxr")
    model = base / "model"
    result = train_universal([hippocampus, lungs], model, budget_seconds=600, progress=False,
                             train_config={"max_iterations": 12, "iterations_per_epoch": 6, "threads": 1,
                                           "num_workers": 0})
    return {"model": model, "result": result, "hippocampus": hippocampus, "lungs": lungs, "base": base}


def test_train_universal_writes_one_folder_with_the_vocabulary_every_plan_and_the_weights(trained):
    model = trained["model"]
    spec = json.loads((model / "model.json").read_text())
    assert spec["task"] == "universal"
    assert spec["network"]["num_classes"] == 4  # background, anterior, posterior, lung
    sources = {s["name"]: s for s in spec["extra"]["sources"]}
    assert sources["MSD_Task04_Hippocampus"]["classes"] == [1, 2]
    assert sources["CXR_lung_fields_MC_SZ"]["classes"] == [3]
    names = [e["name"] for e in json.loads((model / "vocabulary.json").read_text())["entries"]]
    assert names == ["anterior hippocampus", "posterior hippocampus", "hippocampus", "lung"]
    for name in sources:
        plan = json.loads((model / "datasets" / name / "plans.json").read_text())
        assert list(plan["configurations"]) == ["2d"]
        assert all(p % 32 == 0 for p in plan["configurations"]["2d"]["patch_size"])
    assert (model / "fold_all" / "weights.safetensors").is_file()
    assert trained["result"].steps == 12
    log = json.loads((model / "fold_all" / "training_log.json").read_text())["history"]
    assert len(log[-1]["train_patch_dice"]) == 3


def test_segment_gives_each_prompt_its_mask_on_the_image_grid_a_parent_the_union_of_its_parts(trained):
    from medseg.universal.model import UniversalModel

    model = UniversalModel.from_folder(trained["model"])
    image = read_image(sorted((trained["hippocampus"] / "imagesTr").iterdir())[0])
    answers = model.segment(image, ["hippocampi", "anterior hippocampus", "hippocampal tail"])
    assert [a.match.entry.name for a in answers] == ["hippocampus", "anterior hippocampus", "posterior hippocampus"]
    for answer in answers:
        assert answer.mask.spatial_shape == image.spatial_shape and answer.mask.same_grid(image)
        assert set(np.unique(answer.mask.array)) <= {0, 1}
    union = answers[1].mask.array | answers[2].mask.array
    np.testing.assert_array_equal(answers[0].mask.array, union)
    assert not (answers[1].mask.array & answers[2].mask.array).any()  # one dataset's labels: exclusive
    with pytest.raises(MedsegError, match="names no known structure"):
        model.segment(image, ["liver"])


def test_medseg_segment_writes_the_masks_and_refuses_bad_input_with_exit_2_and_nothing_written(trained):
    runner = CliRunner()
    image = sorted((trained["lungs"] / "imagesTr").iterdir())[0]
    out = trained["base"] / "segmented"
    result = runner.invoke(app, ["segment", str(image), "-p", "lungs", "-p", "poumons", "-m", str(trained["model"]),
                                 "-o", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "segment.json").read_text())
    assert [m["structure"] for m in record["masks"]] == ["lung", "lung"]
    mask = read_image(out / record["masks"][0]["file"])
    assert mask.spatial_shape == read_image(image).spatial_shape
    from skimage.io import imsave

    photo = trained["base"] / "photo.png"
    imsave(photo, np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8), check_contrast=False)
    for source, arguments, message in [
        (image, ["-p", "liver"], "nearest known structures"),
        (photo, ["-p", "lung"], "learned from"),  # an RGB photo for a structure learned on grey X-rays
        (image, ["-p", "lung", "-m", str(trained["base"])], "model.json"),
        (trained["base"] / "missing.png", ["-p", "lung"], "not found"),
    ]:
        refused = trained["base"] / "refused"
        result = runner.invoke(app, ["segment", str(source), *arguments, "-o", str(refused)]
                               + ([] if "-m" in arguments else ["-m", str(trained["model"])]))
        assert result.exit_code == 2, result.output
        assert message in result.output and not refused.exists()
    result = runner.invoke(app, ["segment", "--list-structures", "-m", str(trained["model"])])
    assert result.exit_code == 0 and "hippocampus (MSD_Task04_Hippocampus)" in result.output


def test_train_universal_refuses_a_second_run_without_resume_and_a_missing_dataset(trained):
    runner = CliRunner()
    result = runner.invoke(app, ["train-universal", str(trained["lungs"]), "-o", str(trained["model"]),
                                 "--budget", "1m"])
    assert result.exit_code == 2 and "--resume" in result.output
    result = runner.invoke(app, ["train-universal", str(trained["base"] / "nope"), "-o",
                                 str(trained["base"] / "other"), "--budget", "1m"])
    assert result.exit_code == 2 and not (trained["base"] / "other").exists()


def test_medseg_predict_on_a_universal_folder_points_to_medseg_segment(trained, tmp_path):
    image = sorted((trained["lungs"] / "imagesTr").iterdir())[0]
    result = CliRunner().invoke(app, ["predict", "-i", str(image), "-o", str(tmp_path / "p"), "-m",
                                      str(trained["model"])])
    assert result.exit_code == 2 and "medseg segment" in result.output and not (tmp_path / "p").exists()


def test_a_stopped_universal_training_resumes_from_its_checkpoint(trained, tmp_path):
    from medseg.universal.training import train_universal

    model = tmp_path / "model"
    options = {"iterations_per_epoch": 4, "threads": 1, "num_workers": 0}
    train_universal([trained["lungs"]], model, budget_seconds=600, progress=False,
                    train_config={**options, "max_iterations": 4})
    result = train_universal([trained["lungs"]], model, budget_seconds=600, progress=False, resume=True,
                             train_config={**options, "max_iterations": 8})
    assert result.resumed and result.steps == 8
    history = json.loads((model / "fold_all" / "training_log.json").read_text())["history"]
    assert [h["iteration"] for h in history] == [4, 8]


def test_a_dicom_series_gets_one_dicom_seg_per_prompt_holding_the_same_mask(trained, tmp_path):
    from medseg.io.dicom_seg import read_dicom_seg
    from medseg.io.dicom_write import write_dicom_series
    from medseg.universal.model import UniversalModel
    from medseg.universal.outputs import write_prompt_masks

    volume = read_image(sorted((trained["hippocampus"] / "imagesTr").iterdir())[1])
    series = tmp_path / "series"
    write_dicom_series(volume.with_array((volume.array - volume.array.min()).astype(np.int16)), series)
    image = read_image(series)
    answers = UniversalModel.from_folder(trained["model"]).segment(image, ["hippocampus", "hippocampal head"])
    out = write_prompt_masks(answers, tmp_path / "seg", series, model="test")
    record = json.loads((out / "segment.json").read_text())
    for answer, mask in zip(answers, record["masks"]):
        assert mask["file"].endswith(".seg.dcm")
        stored = read_dicom_seg(out / mask["file"], image)
        np.testing.assert_array_equal(stored.array[0] > 0, answer.mask.array[0] > 0)
    result = CliRunner().invoke(app, ["segment", str(series), "-p", "hippocampus", "-m", str(trained["model"]),
                                      "-o", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert [p.name for p in sorted((tmp_path / "cli").iterdir())] == ["00_hippocampus.seg.dcm", "segment.json"]
