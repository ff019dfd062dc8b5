"""The models a prediction service holds (each loaded once, at start, by ``Predictor.from_folder``) and the job
runner that reads a job's image, predicts it and writes its label file in the input's format."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from medseg.errors import MedsegError
from medseg.inference.predictor import Predictor
from medseg.preprocess import pipeline as _preprocess  # noqa: F401  (imported before the workers need it)
from medseg.io import strip_suffix, write_image
from medseg.serve.jobs import Job, Progress
from medseg.serve.limits import ImageReader
from medseg.serve.roots import confine

# input suffix -> the label file's: lossy or odd formats get a lossless single-file one, a DICOM folder NIfTI
RESULT_SUFFIXES = {".jpg": ".png", ".jpeg": ".png", ".bmp": ".png", ".mhd": ".mha", ".nhdr": ".nrrd",
                   ".dcm": ".nii.gz", "": ".nii.gz"}


@dataclass
class ServedModel:
    """A model folder's predictor (shared by the workers; torch modules in eval mode predict concurrently) and
    what ``GET /v1/models`` says of it."""

    name: str
    folder: Path
    predictor: Predictor
    info: dict


def load_models(folders: Sequence[Path], *, device: str = "cpu") -> dict[str, ServedModel]:
    """Each folder's model under its folder name (``MedsegError`` when two share a name, or one cannot load)."""
    from medseg.config.model_folder import available_folds, read_segmentation_model

    models: dict[str, ServedModel] = {}
    for folder in map(Path, folders):
        name = folder.resolve().name
        if name in models:
            raise MedsegError(f"two models are named {name!r}", path=folder,
                              fix="serve model folders with different names")
        predictor = Predictor.from_folder(folder, device=device)
        spec, plan, dataset = read_segmentation_model(folder)
        names = {int(v): k for k, v in dataset.labels.items() if isinstance(v, int)}
        info = {"name": name, "task": spec.task, "configuration": spec.configuration,
                "spatial_dims": predictor.spatial_dims, "in_channels": predictor.in_channels,
                "folds": available_folds(folder),
                "labels": [{"value": v, "name": names.get(v, str(v))} for v in spec.label_values],
                "card": spec.card.to_dict()}
        models[name] = ServedModel(name, folder, predictor, info)
    if not models:
        raise MedsegError("no model to serve", fix="pass at least one model folder")
    return models


def result_suffix(input_suffix: str) -> str:
    return RESULT_SUFFIXES.get(input_suffix, input_suffix)


class PredictionRunner:
    """``(job, progress) -> (label file, timings)`` for ``JobQueue``: a path job is confined to ``roots`` again
    when it runs (the file may have become a link since submission); the image is refused from its header over
    ``reader``'s voxel limit; the label file is written atomically under ``results/<job id>/``."""

    def __init__(self, models: dict[str, ServedModel], *, reader: ImageReader, roots: Sequence[Path],
                 results: Path):
        self.models, self.reader, self.roots, self.results = models, reader, list(roots), Path(results)

    def __call__(self, job: Job, progress: Progress) -> tuple[Path, dict]:
        model = self.models.get(job.model)
        if model is None:
            raise MedsegError(f"the server no longer serves model {job.model!r}",
                              fix=f"submit the image again to one of {', '.join(self.models)}")
        start = time.perf_counter()
        progress("reading", 0.05)
        path = Path(job.input_path) if job.source == "upload" else confine(job.input_path, self.roots)
        image = self.reader.read(path, name=job.input_name)
        read_s = time.perf_counter() - start
        progress("predicting", 0.2)
        labels = model.predictor.predict(image)
        predict_s = time.perf_counter() - start - read_s
        progress("writing", 0.9)
        folder = self.results / job.id
        folder.mkdir(parents=True, exist_ok=True)
        written = write_image(labels, folder / f"{strip_suffix(job.input_name) or 'image'}{job.result_suffix}")
        write_s = time.perf_counter() - start - read_s - predict_s
        return written, {"read_s": read_s, "predict_s": predict_s, "write_s": write_s}
