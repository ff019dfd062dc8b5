"""``medseg classical``: fit a classical method on a dataset's training cases and segment images with it, writing
the label maps and ``classical.json`` (the fitted model: method, parameters, rank-to-label map, training Dice and
every combination the search tried) into the output folder."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from medseg.classical.model import ChannelCount, ClassicalModel, fit_classical

MODEL_FILE = "classical.json"


def segment_with_classical(dataset: str | Path, method: str, output: str | Path, *,
                           images: str | Path | None = None, tune_cases: int = 8, overwrite: bool = False,
                           progress: bool | None = None, log: Callable[[str], None] | None = None
                           ) -> tuple[ClassicalModel, list[Path]]:
    """Validate ``dataset`` as training does, fit ``method`` on ``tune_cases`` of its training cases, then
    segment ``images`` (a file, a folder of images or a dataset folder; default: the dataset's ``imagesTs``,
    else its ``imagesTr``) into ``output``; returns the model and the label files written. The output folder and
    every input are checked before any file is written; each file is written atomically."""
    from medseg.config import write_json_atomic
    from medseg.data import open_dataset, read_channels
    from medseg.data.validate import validate_cases
    from medseg.inference.run import check_inputs, collect_cases, output_names, predict_cases
    from medseg.output_paths import prepare_output_dir

    cases = collect_cases(images if images is not None else dataset)
    inputs = [Path(dataset)] + [f for case in cases for f in case.files]
    prepare_output_dir(output, inputs=inputs, overwrite=overwrite, names=output_names(cases) + [MODEL_FILE])
    training = open_dataset(dataset).require_cases()
    validate_cases(training, progress=progress)
    check_inputs(cases, predictor=ChannelCount(read_channels(training.cases[0].image_files).num_channels),
                 progress=progress)  # before the search, which takes a while
    model = fit_classical(dataset, method, cases=tune_cases, log=log)
    if log:
        log(f"{method}: chose {model.params} (training Dice {model.train_dice:.4f} on {len(model.train_cases)} "
            f"cases; ranks -> labels {model.rank_labels})")
    written = predict_cases(model, cases, output, overwrite=overwrite, progress=progress)
    write_json_atomic(model.to_dict(), Path(output) / MODEL_FILE)
    return model, written
