"""Training a cascade's second stage: its first stage's cross-validation predictions and folds.

``3d_cascade_fullres`` (nnU-Net's cascade) reads each case together with the ``3d_lowres`` model's prediction
of it. At training time that prediction must be one the first stage made without having trained on the case, so
every case's prediction comes from ``fold_K/validation/`` of the fold that held it out, and the cascade uses the
first stage's folds (its ``splits.json``): the cascade's fold K then validates on cases whose first-stage input
came from the first stage's fold K. The first stage is a model folder of its own, referenced from the cascade's
``model.json`` (``medseg.config.model_folder.previous_stage_reference``) and run first at prediction.
"""

from __future__ import annotations

from pathlib import Path

from medseg.config import Configuration, read_json, write_json_atomic
from medseg.config.model_folder import read_model_spec
from medseg.errors import MedsegError
from medseg.preprocess.previous_stage import PreviousStage


def first_stage_predictions(previous_model: str | Path | None, config: Configuration, case_ids: list[str],
                            label_values: list[int]) -> PreviousStage:
    """The first stage's cross-validation prediction of every case in ``case_ids``; a MedsegError, before any
    work, when the folder is missing, is another configuration, predicts other labels, or lacks a case."""
    from medseg.inference.find_best import validation_files

    stage = config.previous_stage
    if previous_model is None:
        raise MedsegError(f"{config.name} trains on the {stage} stage's cross-validation predictions",
                          fix=f"train every fold of {stage} first (medseg train ... -c {stage} -f K -o LOWRES), "
                          "then pass --previous-stage LOWRES")
    previous_model = Path(previous_model)
    if not (previous_model / "model.json").is_file():
        raise MedsegError("the previous stage is not a medseg model folder (no model.json)", path=previous_model,
                          fix=f"pass the folder that medseg train -c {stage} wrote")
    spec = read_model_spec(previous_model)
    if spec.task != "segmentation" or spec.configuration != stage:
        raise MedsegError(f"the previous stage was trained as {spec.configuration or spec.task!r}, this cascade "
                          f"refines {stage!r}", path=previous_model, fix=f"pass the {stage} model folder")
    if list(spec.label_values) != list(label_values):
        raise MedsegError(f"the previous stage predicts labels {spec.label_values}, the dataset has {label_values}",
                          path=previous_model, fix="pass the first stage trained on this dataset")
    files, _ = validation_files(previous_model)
    missing = sorted(set(case_ids) - set(files))
    if missing:
        raise MedsegError(f"{len(missing)} case(s) have no cross-validation prediction of the previous stage "
                          f"(e.g. {', '.join(missing[:3])})", path=previous_model,
                          fix=f"train every fold of {stage} with validation (-f 0, -f 1, ...), so that each case is "
                          "predicted by the fold that held it out")
    return PreviousStage({case: files[case] for case in case_ids}, [int(v) for v in label_values[1:]])


def share_first_stage_splits(previous_model: str | Path, model_dir: str | Path) -> None:
    """Give the cascade's folder the first stage's ``splits.json``; a MedsegError when it has other folds."""
    source = Path(previous_model) / "splits.json"
    target = Path(model_dir) / "splits.json"
    if not source.is_file():
        raise MedsegError("the previous stage has no splits.json", path=previous_model,
                          fix="train its cross-validation folds with medseg train first")
    splits = read_json(source)
    if target.is_file() and read_json(target) != splits:
        raise MedsegError("the cascade's folds differ from its first stage's", path=target,
                          fix="train the cascade into a new folder (-o), which takes the first stage's folds")
    if not target.is_file():
        write_json_atomic(splits, target)


def cascade_input_channels(config: Configuration, image_channels: int, label_values: list[int]) -> None:
    """Set a cascade network's ``in_channels`` to the image's channels + one per foreground label (plans from
    before the planner counted them had the image's alone)."""
    expected = image_channels + len(label_values) - 1
    if int(config.network.get("in_channels", 0)) != expected:
        config.network["in_channels"] = expected
        config.decide("network.in_channels", expected, f"{image_channels} image channel(s) + "
                      f"{len(label_values) - 1} one-hot channels of the first stage's prediction")
