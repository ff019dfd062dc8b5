"""The built-in main job: make an example dataset (no download), check it, fingerprint it.

Later pipeline stages (plan, train, predict, evaluate) join here as they land, so ``medseg demo`` always runs the
longest path that exists on data that ships with medseg.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from medseg.config import Fingerprint
from medseg.data.check import CheckReport, check_dataset
from medseg.errors import MedsegError
from medseg.planning import compute_fingerprint, write_fingerprint
from medseg.synth.shapes import write_shapes_dataset

MARKER = ".medseg-demo"


@dataclass
class DemoResult:
    folder: Path
    dataset: Path
    check: CheckReport
    fingerprint: Fingerprint
    fingerprint_path: Path


def run_demo(folder: str | Path, *, num_cases: int = 8, seed: int = 0, progress: bool | None = None) -> DemoResult:
    """Run the demo in ``folder`` (created; a previous demo there is replaced, any other content is refused)."""
    folder = Path(folder)
    if folder.exists():
        if not (folder / MARKER).is_file():
            raise MedsegError("folder exists and was not made by medseg demo", path=folder,
                              fix="choose a new folder with --out")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("made by medseg demo; safe to delete\n")
    dataset = write_shapes_dataset(folder / "dataset", num_cases=num_cases, seed=seed)
    report = check_dataset(dataset, progress=progress)
    fingerprint = compute_fingerprint(dataset, progress=progress)
    path = write_fingerprint(fingerprint, folder / "fingerprint.json")
    return DemoResult(folder, dataset, report, fingerprint, path)
