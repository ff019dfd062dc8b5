"""Validate a raw dataset: every problem becomes one line naming the file and the fix."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from medseg.data.layout import Case, Dataset, open_dataset
from medseg.data.validate import Problem, dataset_problems, read_case
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
    problems = dataset_problems(dataset)
    check = functools.partial(check_case, dataset, tolerance=tolerance)
    for case_problems in map_cases(check, dataset.cases, workers=workers, description="checking",
                                   progress=progress):
        problems.extend(case_problems)
    return CheckReport(Path(root), len(dataset.cases), problems)


def check_case(dataset: Dataset, case: Case, *, tolerance: float = 1e-4) -> list[Problem]:
    """All problems of one case: missing/extra files, unreadable files, channels, grids, label values, NaN/Inf
    (``medseg.data.validate.read_case``, which the commands that read cases use too)."""
    return read_case(dataset, case, tolerance=tolerance).problems
