"""The target side of an adaptation: the few training cases (shots) drawn from a dataset; the base model's plan
configuration reused for the target is :func:`medseg.planning.transfer.target_plan`."""

from __future__ import annotations

import dataclasses

import numpy as np

from medseg.data.layout import Dataset
from medseg.errors import MedsegError


def draw_shots(dataset: Dataset, shots: int, seed: int) -> Dataset:
    """``dataset`` restricted to ``shots`` of its training cases, drawn without replacement by a generator seeded
    with ``seed`` from the sorted case ids (the same draw for the same ids, seed and count)."""
    ids = sorted(case.case_id for case in dataset.cases)
    if not 1 <= shots <= len(ids):
        raise MedsegError(f"--shots {shots}: the dataset has {len(ids)} training case(s)", path=dataset.root,
                          fix=f"use --shots 1..{len(ids)}")
    chosen = set(np.random.default_rng(seed).choice(ids, size=shots, replace=False).tolist())
    spec = dataclasses.replace(dataset.spec, num_training=shots)  # what the checks of the subset expect
    return dataclasses.replace(dataset, spec=spec, cases=[c for c in dataset.cases if c.case_id in chosen],
                               test_cases=[])
