"""Score a probabilistic model's samples against several raters: ``medseg evaluate SAMPLES REF --raters``.

``SAMPLES`` holds ``<case>_s<K>`` label maps (``medseg predict --samples``: ``OUTPUT/samples/``), ``REF`` the
raters' ``<case>_r<K>`` maps (a multi-rater dataset's ``labelsTr/``). Per case: the metrics of
``medseg.metrics.raters`` over all its samples and raters; ``raters.csv`` (one row per case) and ``raters.json``
(per case, and each metric's mean with a 95% bootstrap interval over the cases).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from medseg.atomic import atomic_write
from medseg.errors import MedsegError
from medseg.evaluation.cases import list_cases
from medseg.evaluation.report import write_json
from medseg.metrics import summarise
from medseg.metrics.raters import rater_metrics

SAMPLE_FILE = re.compile(r"^(?P<case>.+)_s(?P<index>\d+)$")
RATER_FILE = re.compile(r"^(?P<case>.+)_r(?P<index>\d+)$")


def numbered_maps(folder: Path, pattern: re.Pattern, role: str) -> dict[str, dict[int, Path]]:
    """``{case: {K: file}}`` of the files of ``folder`` named ``<case>_s<K>`` / ``<case>_r<K>``."""
    found: dict[str, dict[int, Path]] = {}
    for stem, path in list_cases(folder, role).items():
        match = pattern.match(stem)
        if match:
            found.setdefault(match["case"], {})[int(match["index"])] = path
    return found


def evaluate_raters(samples_dir: str | Path, reference_dir: str | Path, output: str | Path, *,
                    labels: list[int] | None = None) -> dict:
    """Score every case of ``samples_dir`` against its raters in ``reference_dir`` (see the module docstring);
    ``labels``: the foreground values (default: every non-zero value in the raters' maps). A case with samples
    and no raters, or a sample on another grid than its raters, is a ``MedsegError`` before anything is written."""
    from medseg.io import grid_differences, read_image

    samples_dir, reference_dir, output = Path(samples_dir), Path(reference_dir), Path(output)
    samples = numbered_maps(samples_dir, SAMPLE_FILE, "samples")
    raters = numbered_maps(reference_dir, RATER_FILE, "reference")
    if not samples:
        raise MedsegError("no sampled label maps (<case>_s<K>)", path=samples_dir,
                          fix="pass the samples/ folder that medseg predict --samples wrote")
    missing = sorted(set(samples) - set(raters))
    if missing:
        raise MedsegError(f"{len(missing)} case(s) have samples but no raters' maps, e.g. {missing[0]}",
                          path=reference_dir, fix=f"pass the folder with {missing[0]}_r1, {missing[0]}_r2, ...")
    read = {}
    for case in sorted(samples):
        maps = {}
        for role, files in (("samples", samples[case]), ("raters", raters[case])):
            images = [read_image(files[k]) for k in sorted(files)]
            for k, image in zip(sorted(files), images):
                problems = grid_differences(images[0], image)
                if problems:
                    raise MedsegError(f"not on the grid of {files[sorted(files)[0]].name}: {'; '.join(problems)}",
                                      path=files[k], fix="write every sample and rater map on the image's grid")
            maps[role] = np.stack([image.array[0] for image in images])
        if maps["samples"].shape[1:] != maps["raters"].shape[1:]:
            raise MedsegError(f"samples {maps['samples'].shape[1:]} and raters {maps['raters'].shape[1:]} differ in "
                              "shape", path=samples[case][sorted(samples[case])[0]],
                              fix="predict the samples from the raters' images")
        read[case] = maps
    values = labels or sorted({int(v) for maps in read.values() for v in np.unique(maps["raters"]) if v > 0})
    per_case = {case: {"samples": len(maps["samples"]), "raters": len(maps["raters"]),
                       **rater_metrics(maps["samples"], maps["raters"], values)} for case, maps in read.items()}
    keys = [k for k in next(iter(per_case.values())) if k not in ("samples", "raters")]
    summary = {"labels": values, "cases": len(per_case),
               "metrics": {key: summarise([row[key] for row in per_case.values()]) for key in keys},
               "per_case": per_case}
    output.mkdir(parents=True, exist_ok=True)

    def write_rows(temporary: Path) -> None:
        with open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["case", "samples", "raters", *keys])
            for case, row in per_case.items():
                writer.writerow([case, row["samples"], row["raters"], *[f"{row[k]:.6g}" for k in keys]])

    atomic_write(output / "raters.csv", write_rows)
    write_json(summary, output / "raters.json")
    return summary
