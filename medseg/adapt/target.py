"""The target side of an adaptation: the few training cases (shots) drawn from a dataset, and the base model's
plan configuration reused for the target (same spacing, patch, normalisation scheme and network; only the
channel count and the label set follow the target)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from medseg.config import Configuration, Normalization, Plan
from medseg.config.dataset_spec import DatasetSpec
from medseg.data.layout import Dataset
from medseg.errors import MedsegError

RGB_NAMES = {"r", "g", "b", "red", "green", "blue"}


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


def target_normalization(base: list[Normalization], channel_names: list[str]) -> tuple[list[Normalization], str]:
    """The base's normalisation when the channel count is the same; for another count the base's one scheme for
    every target channel (when all its channels share one that needs no dataset statistics, i.e. not ``ct``),
    else ``rgb`` for RGB target channels."""
    if len(base) == len(channel_names):
        return copy.deepcopy(base), "the base model's normalisation"
    names = [n.lower() for n in channel_names]
    schemes = {(n.scheme, n.use_mask) for n in base}
    if len(schemes) == 1 and base[0].scheme != "ct":
        return ([Normalization(base[0].scheme, use_mask=base[0].use_mask) for _ in names],
                f"the base model's {base[0].scheme} normalisation for each of the {len(names)} target channels")
    if len(names) in (3, 4) and set(names[:3]) <= RGB_NAMES:
        return [Normalization("rgb") for _ in names], "RGB target channels: scale 0..255 to 0..1"
    raise MedsegError(f"the target has {len(names)} channel(s) ({', '.join(channel_names)}), the base model "
                      f"{len(base)} normalised as {sorted(s for s, _ in schemes)}",
                      fix="adapt to a dataset with the base model's channels")


def target_plan(base_plan: Plan, configuration: str, target: DatasetSpec) -> tuple[Plan, Configuration]:
    """The base plan cut to ``configuration``, for ``target``'s channels and labels (its network's
    ``in_channels`` and ``num_classes``); the decisions say what changed."""
    config = copy.deepcopy(base_plan.configurations[configuration])
    if config.previous_stage:
        raise MedsegError(f"{configuration} is a cascade's second stage", fix="adapt a single-stage model")
    config.normalization, reason = target_normalization(config.normalization, target.channel_names)
    config.decide("normalization", [n.scheme for n in config.normalization], f"medseg adapt: {reason}")
    network = dict(config.network)
    network["in_channels"] = len(target.channel_names)
    network["num_classes"] = len(target.predicted_label_values)
    config.network = network
    config.decide("network", {"in_channels": network["in_channels"], "num_classes": network["num_classes"]},
                  "medseg adapt: the target's channels and label set; spacing, patch and topology of the base plan")
    plan = dataclasses.replace(copy.deepcopy(base_plan), dataset_name=target.name, channel_names=list(target.channel_names),
                               labels=dict(target.labels), configurations={configuration: config}, dataset=None)
    return plan, config
