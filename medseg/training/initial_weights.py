"""``medseg train --init FOLDER``: start a segmentation run from another model folder's weights instead of a random
draw: a pretrained folder (``medseg pretrain``) or a trained segmentation model (fine-tuning on new data).

Without a plan of its own the run takes the start folder's plan, moved to the dataset
(:func:`medseg.planning.transfer.target_plan`), so the network is the one whose weights are loaded. Every tensor is
copied but the output head (and deep-supervision heads), which are drawn anew unless the start model predicts the
very same labels; a first convolution for another channel count starts from the channel mean of the old one. A
network of another topology (a plan given with ``--plans`` that does not match) is one clear error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from medseg.config import Plan
from medseg.config.dataset_spec import DatasetSpec
from medseg.config.model_folder import (WEIGHTS, ModelSpec, available_folds, fold_folder, read_fold_weights,
                                        read_start_model)
from medseg.errors import MedsegError

INIT = "init"  # ModelSpec.extra key: where a run's starting weights came from


@dataclass
class StartModel:
    """A folder training can start from: its spec, plan, dataset spec and the fold whose weights are used."""

    folder: Path
    spec: ModelSpec
    plan: Plan
    dataset: DatasetSpec
    fold: str


def read_start(folder: str | Path) -> StartModel:
    """The start folder checked before any work: a pretrained or segmentation model with weights (fold ``all``,
    else the first fold)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MedsegError("the --init model folder is not there", path=folder,
                          fix="pass a folder written by medseg pretrain or medseg train")
    spec, plan, dataset = read_start_model(folder)
    folds = available_folds(folder)
    if not folds:
        raise MedsegError("the --init model folder has no fold with weights", path=folder,
                          fix="finish its training first (medseg pretrain/train ... --resume)")
    if spec.configuration not in plan.configurations:
        raise MedsegError(f"configuration {spec.configuration!r} is not in its plans.json", path=folder,
                          fix="pass a folder written by medseg pretrain or medseg train")
    return StartModel(folder, spec, plan, dataset, "all" if "all" in folds else folds[0])


def start_plan(start: StartModel, configuration: str, target: DatasetSpec) -> Plan:
    """The start folder's plan for ``target`` (its channels and labels), cut to ``configuration``, which must be
    the configuration the start model was trained with."""
    from medseg.planning.transfer import target_plan

    if configuration != start.spec.configuration:
        raise MedsegError(f"the --init model was trained with the {start.spec.configuration} configuration, not "
                          f"{configuration}", path=start.folder, fix=f"use -c {start.spec.configuration}")
    plan, _ = target_plan(start.plan, configuration, target, by="medseg train --init")
    return plan


def load_start_weights(network: nn.Module, spec: ModelSpec, start: StartModel) -> dict[str, Any]:
    """Copy the start weights into ``network`` (built from ``spec``, the run's model); returns the record kept in
    ``model.json`` (``extra["init"]``: folder, fold, sha256, task, tensors copied, head kept)."""
    from medseg.nets.adapted import changing_keys, transplant
    from medseg.weights_file import sha256_file

    state = read_fold_weights(start.folder, start.fold)
    head = changing_keys(spec.network, "num_classes")
    stem = changing_keys(spec.network, "in_channels")
    keep_head = start.spec.task == "segmentation" and list(start.spec.label_values) == list(spec.label_values)
    try:
        transplant(network, state, head=head, stem=stem, keep_head=keep_head)
    except MedsegError as error:
        raise MedsegError(f"the --init weights do not fit this run's network: {str(error).split(' (fix: ')[0]}",
                          path=start.folder, fix="omit --plans so that the --init folder's own plan is used, or "
                          "pretrain with this plan (medseg pretrain ... --plans PLANS)") from None
    copied = sum(1 for key in state if keep_head or key not in head)
    return {"folder": str(start.folder.resolve()), "fold": start.fold, "task": start.spec.task,
            "sha256": sha256_file(fold_folder(start.folder, start.fold) / WEIGHTS), "tensors_copied": copied,
            "tensors": len(network.state_dict()), "head_kept": keep_head}
