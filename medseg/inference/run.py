"""Predict a file, a folder of files or a dataset folder into an output folder (what ``medseg predict`` runs).

Cases are found and every input file is read once (``check_inputs``: readable, finite, its channels on one grid,
as many channels and spatial dimensions as the model takes) before anything is predicted, so a bad input stops the
run before any file is written; each label file (``<case><suffix of the input>``, or of ``output_format``: see
``label_outputs``) and probability file (``<case>.npz``) is written atomically, and an existing one is replaced
only with ``overwrite``. A folder that holds exactly one DICOM series is one case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from medseg.atomic import remove_stale_temporaries
from medseg.errors import MedsegError
from medseg.io import strip_suffix
from medseg.io.sitk_io import detached_data_file
from medseg.io.formats import require_image_suffix as _suffix  # the same error as read_image gives
from medseg.inference.label_outputs import (SERIES_SUFFIX, check_dicom_sources, is_series_case, output_suffix,
                                           write_labels)

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass
class InputCase:
    """One case to predict: its channel files in order and the suffix its label file gets."""

    case_id: str
    files: list[Path]
    suffix: str


def collect_cases(source: str | Path) -> list[InputCase]:
    """Cases of an image file, a DICOM series folder, a dataset folder (``imagesTs``, else ``imagesTr``) or a
    folder of image files
    (``<case>_<CCCC><suffix>`` files are grouped into one multi-channel case; other files are cases alone; the
    data files that ``.mhd`` / ``.nhdr`` headers name are part of their header's case)."""
    source = Path(source)
    if not source.exists():
        raise MedsegError("input not found", path=source, fix="pass an image file or a folder of images")
    if source.is_file():
        suffix = _suffix(source)
        match = _CHANNEL.match(strip_suffix(source))
        return [InputCase(match["case"] if match else strip_suffix(source), [source], suffix)]
    if (source / "dataset.json").is_file():
        from medseg.data import open_dataset

        dataset = open_dataset(source)
        cases = dataset.test_cases or dataset.cases
        return [InputCase(c.case_id, list(c.image_files), _suffix(c.image_files[0])) for c in cases if c.image_files]
    from medseg.io.dicom_source import single_series_files

    if single_series_files(source) is not None:
        return [InputCase(source.name, [source], SERIES_SUFFIX)]
    groups: dict[str, dict[int, Path]] = {}
    entries = sorted(source.iterdir())
    data_files = {detached_data_file(path) for path in entries} - {None}  # x.raw of an x.mhd is not a case
    for path in entries:
        if path.name.startswith(".") or path.is_dir() or path.name in data_files:
            continue
        _suffix(path)
        match = _CHANNEL.match(strip_suffix(path))
        if match:
            groups.setdefault(match["case"], {})[int(match["channel"])] = path
        else:
            groups.setdefault(strip_suffix(path), {})[0] = path
    if not groups:
        raise MedsegError("no image files in the folder", path=source, fix="pass a folder of images")
    return [InputCase(case, [files[c] for c in sorted(files)], _suffix(files[min(files)]))
            for case, files in sorted(groups.items())]


def output_names(cases: Sequence[InputCase], *, save_probabilities: bool = False,
                 output_format: str | None = None, extra_names: Callable[[str], list[str]] | None = None
                 ) -> list[str]:
    """The file names ``predict_cases`` writes: ``<case><suffix>`` and, with probabilities, ``<case>.npz``, and
    ``extra_names(case_id)`` (e.g. an uncertainty predictor's ``file_names``);
    ``MedsegError`` for a DICOM ``output_format`` and an input that is not a DICOM series."""
    names = [f"{case.case_id}{output_suffix(case, output_format)}" for case in cases]
    names += [name for case in cases for name in extra_names(case.case_id)] if extra_names else []
    return names + ([f"{case.case_id}.npz" for case in cases] if save_probabilities else [])


def check_inputs(cases: Sequence[InputCase], *, predictor=None, progress: bool | None = None) -> None:
    """Read every case's channel files once (decoded in full, one case at a time, then dropped) so that an
    unreadable, truncated, non-finite or off-grid file stops the run with its ``MedsegError`` before the first
    write; with ``predictor`` (a ``Predictor`` or ``EnsemblePredictor``), also an image whose channel count or
    dimension is not what each of its models takes (an RGB image for a grey model)."""
    from medseg.data import read_channels
    from medseg.progress import track

    members = list(getattr(predictor, "predictors", None) or ([predictor] if predictor is not None else []))
    for case in track(cases, "check inputs", enabled=progress):
        image = read_channels(case.files)
        for member in members:
            member.check_image(image)  # the check predict itself makes: one rule, applied before any file is written


QUALITY_FOLDER = "qc"  # where a quality model's (medseg.trust.qc) per-case scores go
INSTANCES_FOLDER = "instances"  # where an instance model's instance maps go, beside the label maps
SAMPLES_FOLDER = "samples"  # where a probabilistic model's sampled label maps go: <case>_s<K>


def sample_names(case: InputCase, count: int) -> list[str]:
    """The sampled label maps' names, ``samples/<case>_s1 .. _s<count>`` in the input's format (NIfTI for a
    DICOM series)."""
    suffix = '.nii.gz' if is_series_case(case) else case.suffix
    return [f"{SAMPLES_FOLDER}/{case.case_id}_s{k + 1}{suffix}" for k in range(count)]


def instance_name(case: InputCase) -> str:
    """The instance map's file name: ``<case>`` in the input's format (NIfTI for a DICOM series)."""
    return f"{case.case_id}{'.nii.gz' if is_series_case(case) else case.suffix}"


def predict_cases(predictor, cases: Sequence[InputCase], output: str | Path, *, save_probabilities: bool = False,
                  overwrite: bool = False, progress: bool | None = None, output_format: str | None = None,
                  label_names: dict[int, str] | None = None, uncertainty=None, quality=None, samples: int = 0,
                  seed: int = 0) -> list[Path]:
    """Predict every case with ``predictor`` (a ``Predictor`` or ``EnsemblePredictor``); returns the label files.

    ``output_format``: None (the input's format), ``"nifti"``, ``"dicom-seg"`` or ``"rtstruct"`` (DICOM series
    inputs only); ``label_names`` (value -> name) names the segments / ROIs (default ``"label <value>"``).
    ``uncertainty``: a ``medseg.trust.uncertainty.UncertaintyPredictor`` (``predictor`` itself, usually): each
    case's labels come from its ``predict_and_write``, which writes the uncertainty maps and summary too.
    ``quality``: a ``medseg.trust.qc.QualityModel``: each case's class probabilities are scored too, into
    ``OUTPUT/qc/<case>.json`` (written atomically, after the label file). ``samples``: a probabilistic model's
    plausible label maps per case (``Predictor.predict_samples`` with ``seed``), into ``OUTPUT/samples/<case>_s<K>``.

    The output folder is checked first (writable, not inside an input dataset or input folder, no existing
    output file unless ``overwrite``), then every input is read and checked against the model
    (``check_inputs``), then cases are predicted.
    """
    from medseg.config import write_json_atomic
    from medseg.data import read_channels
    from medseg.inference.ensemble import save_probabilities as save
    from medseg.io import write_image
    from medseg.output_paths import prepare_output_dir
    from medseg.progress import track

    inputs = [f for case in cases for f in case.files]  # the output may not be the folder of any of them
    names = output_names(cases, save_probabilities=save_probabilities, output_format=output_format,
                         extra_names=uncertainty.file_names if uncertainty is not None else None)
    names += [f"{QUALITY_FOLDER}/{case.case_id}.json" for case in cases] if quality is not None else []
    instances = bool(getattr(predictor, "instances", False))  # an instance model: also OUTPUT/instances/<case>
    names += [f"{INSTANCES_FOLDER}/{instance_name(case)}" for case in cases] if instances else []
    if samples and not getattr(predictor, "latent_dim", 0):
        raise MedsegError("--samples needs a probabilistic model (one trained on several raters' label maps)",
                          fix="train the probabilistic configuration, or leave --samples out")
    names += [name for case in cases for name in sample_names(case, samples)] if samples else []
    prepare_output_dir(output, inputs=inputs, overwrite=overwrite, names=names)
    check_inputs(cases, predictor=predictor, progress=progress)
    check_dicom_sources(cases, output_format)
    remove_stale_temporaries(output, targets=names)
    output = Path(output)
    if label_names is None:
        label_names = {int(v): f"label {int(v)}" for v in predictor.label_values if int(v) != 0}
    written = []
    for case in track(cases, "predict", enabled=progress):
        image = read_channels(case.files)
        objects = None
        if uncertainty is not None:
            labels, probabilities = uncertainty.predict_and_write(image, output, case.case_id)
            if save_probabilities:
                save(output / f"{case.case_id}.npz", probabilities.array, predictor.label_values)
        elif save_probabilities or quality is not None:
            if instances:  # one pass: labels, distance map and probabilities
                labels, objects, probabilities = predictor.predict_instances_with_probabilities(image)
            else:
                labels, probabilities = predictor.predict_with_probabilities(image)
            if save_probabilities:
                save(output / f"{case.case_id}.npz", probabilities.array, predictor.label_values)
        elif instances:
            labels, objects = predictor.predict_instances(image)
        else:
            labels = predictor.predict(image)
        if instances:  # with uncertainty maps too: a second pass for the distance map
            objects = objects if objects is not None else predictor.predict_instances(image)[1]
            write_image(objects, output / INSTANCES_FOLDER / instance_name(case))
        if samples:
            for name, sample in zip(sample_names(case, samples), predictor.predict_samples(image, samples, seed=seed)):
                write_image(sample, output / name)
        written.append(write_labels(labels, case, output / f"{case.case_id}{output_suffix(case, output_format)}",
                                    output_format, label_names))
        if quality is not None:
            write_json_atomic(quality.score(probabilities.array, list(predictor.label_values)),
                              output / QUALITY_FOLDER / f"{case.case_id}.json")
    return written
