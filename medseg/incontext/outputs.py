"""An in-context prediction written as one folder in the target's geometry and file format: ``mask<ext>`` (0/1),
and with several candidates ``candidate_<i><ext>`` (0/1) and ``spread<ext>`` (pixel-wise standard deviation of
the candidates' probabilities: float32, or for 8-bit raster formats 0..255 for a deviation of 0..0.5), plus
``incontext.json`` (what was used). The folder appears only when complete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medseg.atomic import atomic_folder
from medseg.config import write_json_atomic
from medseg.errors import MedsegError
from medseg.incontext.session import InContextPrediction
from medseg.io import Image, image_suffix, write_image

EIGHT_BIT = (".png", ".jpg", ".jpeg", ".bmp")


def write_prediction(prediction: InContextPrediction, target: Image, folder: str | Path, *,
                     suffix: str | None = None, info: dict[str, Any] | None = None) -> Path:
    """Write ``prediction`` (on ``target``'s grid) into the new folder ``folder``; ``suffix`` default: the
    target file's, from ``target.metadata["path"]`` when known, else ``.nii.gz``. A lossy JPEG target gets PNG
    masks."""
    folder = Path(folder)
    if folder.exists():
        raise MedsegError("the output folder exists", path=folder, fix="choose a new folder or delete it")
    suffix = suffix or ".nii.gz"
    if suffix in (".jpg", ".jpeg"):
        suffix = ".png"
    with atomic_folder(folder) as partial:
        write_image(target.with_array(prediction.mask[None].astype(np.uint8)), partial / f"mask{suffix}")
        if len(prediction.candidates) > 1:
            for index, candidate in enumerate(prediction.candidates, 1):
                write_image(target.with_array((candidate >= 0.5)[None].astype(np.uint8)),
                            partial / f"candidate_{index}{suffix}")
            spread = prediction.spread[None]
            if suffix in EIGHT_BIT:
                spread = np.clip(np.round(spread * 510), 0, 255).astype(np.uint8)
            write_image(target.with_array(spread.astype(spread.dtype if suffix in EIGHT_BIT else np.float32)),
                        partial / f"spread{suffix}")
        summary = {"foreground_fraction": round(float(prediction.mask.mean()), 6),
                   "candidates": len(prediction.candidates),
                   "mean_spread_in_mask": round(float(prediction.spread[prediction.mask].mean()), 6)
                   if prediction.mask.any() else 0.0, **(info or {})}
        write_json_atomic(summary, partial / "incontext.json")
    return folder


def target_suffix(path: str | Path) -> str:
    """The image suffix of a target file (``.nii.gz`` for a DICOM series folder)."""
    suffix = image_suffix(path)
    return ".nii.gz" if suffix in (None, ".dcm") else suffix
