"""The label file ``medseg predict`` writes per case, by output format: the input's own format (default), NIfTI,
a DICOM SEG or an RTSTRUCT (the last two only for a DICOM series input, whose slices they reference).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from medseg.errors import MedsegError
from medseg.io import Image

# --output-format -> the suffix of the file written per case (None: the input's own suffix)
OUTPUT_FORMATS: dict[str, str] = {"nifti": ".nii.gz", "dicom-seg": ".seg.dcm", "rtstruct": ".rtstruct.dcm"}
DICOM_OUTPUTS = ("dicom-seg", "rtstruct")
SERIES_SUFFIX = ".nii.gz"  # a DICOM series input without --output-format gets a NIfTI label file


def require_output_format(output_format: str | None) -> None:
    if output_format is not None and output_format not in OUTPUT_FORMATS:
        raise MedsegError(f"--output-format {output_format!r} is not one of {', '.join(OUTPUT_FORMATS)}",
                          fix="use nifti, dicom-seg or rtstruct (or leave it out for the input's own format)")


def output_suffix(case, output_format: str | None) -> str:
    """The suffix of ``case``'s label file (``case``: an ``InputCase``); ``MedsegError`` naming the input when a
    DICOM output is asked for an input that is not a DICOM series folder."""
    require_output_format(output_format)
    if output_format in DICOM_OUTPUTS and not is_series_case(case):
        raise MedsegError(f"--output-format {output_format} needs a DICOM series as input (a folder of one "
                          "series' slices), and this is not one", path=case.files[0],
                          fix="pass a DICOM series folder, or use --output-format nifti")
    return case.suffix if output_format is None else OUTPUT_FORMATS[output_format]


def is_series_case(case) -> bool:
    """True for a case read from one DICOM series folder."""
    return len(case.files) == 1 and Path(case.files[0]).is_dir()


def model_label_names(model: str | Path, label_values: Sequence[int]) -> dict[int, str]:
    """Label value -> name for the segments of a DICOM output: the names in the model folder's dataset spec,
    ``"label <value>"`` for a value it does not name (an exported ONNX folder keeps values only)."""
    names: dict[int, str] = {}
    if (Path(model) / "dataset_spec.json").is_file():
        from medseg.config import read_json
        from medseg.config.dataset_spec import DatasetSpec

        spec = DatasetSpec.from_dict(read_json(Path(model) / "dataset_spec.json"))
        names = {value: name for name, value in spec.foreground_labels.items()}
    return {int(v): names.get(int(v), f"label {int(v)}") for v in label_values if int(v) != 0}


def check_dicom_sources(cases: Sequence, output_format: str | None) -> None:
    """For a DICOM output, read every case's slice headers once so that a series without usable geometry
    (uneven slices, no orientation) stops the run before the first write."""
    if output_format not in DICOM_OUTPUTS:
        return
    from medseg.io.dicom_source import read_series_headers, series_grid

    for case in cases:
        series_grid(read_series_headers(case.files[0]))


def write_labels(labels: Image, case, path: Path, output_format: str | None, label_names: dict[int, str]) -> Path:
    """Write ``labels`` ``(1, *spatial)`` of ``case`` to ``path`` in ``output_format`` (atomically)."""
    if output_format not in DICOM_OUTPUTS:
        from medseg.io import write_image

        return write_image(labels, path)
    from medseg.io.dicom_source import read_series_headers

    headers = read_series_headers(case.files[0])
    if output_format == "dicom-seg":
        from medseg.io.dicom_seg import write_dicom_seg

        return write_dicom_seg(labels, headers, label_names, path)
    from medseg.io.rtstruct import write_rtstruct

    return write_rtstruct(labels, headers, label_names, path)
