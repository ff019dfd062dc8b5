"""What ``medseg segment`` writes: one mask file per prompt (in the image's geometry and format; for a DICOM series
a DICOM SEG per prompt, one segment named after the structure, referencing the series) and ``segment.json`` (each
prompt, the structure it matched, how, the dataset whose view predicted it, the file)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from medseg.config import write_json_atomic
from medseg.io import image_suffix, write_image
from medseg.universal.model import PromptMask


def mask_name(index: int, structure: str) -> str:
    return f"{index:02d}_{re.sub(r'[^a-z0-9]+', '_', structure.lower()).strip('_')}"


def write_prompt_masks(answers: Sequence[PromptMask], output: str | Path, source: Path, *, model: str) -> Path:
    """Write every answer into the new folder ``output`` (built under a hidden name, renamed when complete) and
    return it. Masks take the input's suffix when it can hold a label map; a JPEG or a single DICOM file gives
    NIfTI (3D) or PNG (2D); a DICOM series folder gives DICOM SEG."""
    import shutil

    output = Path(output)
    partial = output.parent / f".{output.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    headers = None
    if source.is_dir():  # a DICOM series: DICOM SEG, referencing its slices
        from medseg.io.dicom_source import read_series_headers

        headers, suffix = read_series_headers(source), ".seg.dcm"
    else:
        suffix = image_suffix(source)
        if suffix in (None, ".jpg", ".jpeg", ".dcm"):
            suffix = ".nii.gz" if answers and answers[0].mask.ndim == 3 else ".png"
    records = []
    for index, answer in enumerate(answers):
        target = partial / f"{mask_name(index, answer.match.entry.name)}{suffix}"
        if headers is not None:
            from medseg.io.dicom_seg import write_dicom_seg

            path = write_dicom_seg(answer.mask, headers, {1: answer.match.entry.name}, target,
                                   series_description=f"medseg segment: {answer.match.entry.name}")
        else:
            path = write_image(answer.mask, target)
        records.append({"prompt": answer.match.prompt, "structure": answer.match.entry.name,
                        "method": answer.match.method, "score": round(answer.match.score, 4),
                        "dataset": answer.dataset, "file": path.name, "voxels": int(answer.mask.array.sum())})
    write_json_atomic({"source": str(source), "model": model, "masks": records}, partial / "segment.json")
    partial.rename(output)  # whole or not at all
    return output
