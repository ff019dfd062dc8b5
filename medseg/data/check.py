"""Validate a raw dataset: every problem becomes one line naming the file and the fix."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from medseg.data.layout import Case, Dataset, open_dataset
from medseg.data.validate import Problem, read_case
from medseg.parallel import map_cases

__all__ = ["CheckReport", "Problem", "check_case", "check_dataset"]


@dataclass
class CheckReport:
    dataset: Path
    num_cases: int
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return f"{self.dataset}: {self.num_cases} cases checked, no problems"
        return f"{self.dataset}: {self.num_cases} cases checked, {len(self.problems)} problem(s)"


def check_dataset(root: str | Path, *, tolerance: float = 1e-4, workers: int | None = None,
                  progress: bool | None = None) -> CheckReport:
    """Check every case of the dataset at ``root``; the dataset.json itself must parse (else MedsegError)."""
    dataset = open_dataset(root)
    problems = [Problem(p, "file matches no case name pattern",
                        f"name images <case>_<CCCC>{dataset.spec.file_ending} and labels <case>{dataset.spec.file_ending}")
                for p in dataset.stray_files]
    if dataset.spec.num_training and dataset.spec.num_training != len(dataset.cases):
        problems.append(Problem(dataset.root / "dataset.json",
                                f"numTraining is {dataset.spec.num_training} but {len(dataset.cases)} cases were found",
                                "correct numTraining or add the missing cases"))
    check = functools.partial(check_case, dataset, tolerance=tolerance)
    for case_problems in map_cases(check, dataset.cases, workers=workers, description="checking",
                                   progress=progress):
        problems.extend(case_problems)
    return CheckReport(Path(root), len(dataset.cases), problems)


def check_case(dataset: Dataset, case: Case, *, tolerance: float = 1e-4) -> list[Problem]:
    """All problems of one case: missing/extra files, unreadable files, channels, grids, label values, NaN/Inf
    (``medseg.data.validate.read_case``, which the commands that read cases use too)."""
    return read_case(dataset, case, tolerance=tolerance).problems
