"""A plan moved to another dataset (``medseg adapt``, ``medseg train --init``): the same spacing, patch,
normalisation scheme and network topology, so a trained or pretrained network's weights fit; only the channel
count and the label set follow the new dataset (nnU-Net's "move plans between datasets" for pretraining)."""

from __future__ import annotations

import copy
import dataclasses

from medseg.config import Configuration, Normalization, Plan
from medseg.config.dataset_spec import DatasetSpec
from medseg.errors import MedsegError
from medseg.planning.planner import RGB_NAMES


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
                      fix="use a dataset with the base model's channels")


def target_plan(base_plan: Plan, configuration: str, target: DatasetSpec, *, by: str = "medseg adapt"
                ) -> tuple[Plan, Configuration]:
    """The base plan cut to ``configuration``, for ``target``'s channels and labels (its network's
    ``in_channels`` and ``num_classes``); the decisions say what changed."""
    config = copy.deepcopy(base_plan.configurations[configuration])
    if config.previous_stage:
        raise MedsegError(f"{configuration} is a cascade's second stage", fix="start from a single-stage model")
    config.normalization, reason = target_normalization(config.normalization, target.channel_names)
    config.decide("normalization", [n.scheme for n in config.normalization], f"{by}: {reason}")
    network = dict(config.network)
    network["in_channels"] = len(target.channel_names)
    network["num_classes"] = len(target.predicted_label_values)
    config.network = network
    config.decide("network", {"in_channels": network["in_channels"], "num_classes": network["num_classes"]},
                  f"{by}: the target's channels and label set; spacing, patch and topology of the base plan")
    plan = dataclasses.replace(copy.deepcopy(base_plan), dataset_name=target.name,
                               channel_names=list(target.channel_names), labels=dict(target.labels),
                               configurations={configuration: config}, dataset=None)
    return plan, config
