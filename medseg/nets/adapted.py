"""A network adapted from a base network's weights: the target's network built (new head for a new label set, a
first convolution for another channel count), every base tensor that fits copied in, the parameter-efficient
structure of :mod:`medseg.nets.peft` added; and the loading of an adapted model folder (base + deltas, or a
merged folder's full weights), LoRA folded in for inference."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medseg.config.adaptation import (
    AdaptationRecord,
    adaptation_record,
    base_fold_folder,
)
from medseg.config.model_folder import (
    MODEL_JSON,
    ModelSpec,
    NetworkSpec,
    fold_folder,
    read_fold_weights,
)
from medseg.errors import MedsegError
from medseg.nets.peft import PeftOptions, add_structure, merge_lora
from medseg.nets.registry import create


def _shapes(spec: NetworkSpec, in_channels: int, num_classes: int) -> dict[str, torch.Size]:
    try:
        with torch.device("meta"):
            network = create(spec.name, spec.spatial_dims, in_channels, num_classes, **spec.options)
    except (RuntimeError, NotImplementedError):  # a builder that cannot run on the meta device
        network = create(spec.name, spec.spatial_dims, in_channels, num_classes, **spec.options)
    return {k: v.shape for k, v in network.state_dict().items()}


def changing_keys(spec: NetworkSpec, what: str) -> set[str]:
    """The state-dict keys whose shapes depend on ``what`` ("num_classes": the head, deep-supervision heads
    included; "in_channels": the first convolution), found by building the network once more with one more."""
    if what not in ("num_classes", "in_channels"):
        raise ValueError(what)
    here = _shapes(spec, spec.in_channels, spec.num_classes)
    more = _shapes(spec, spec.in_channels + (what == "in_channels"), spec.num_classes + (what == "num_classes"))
    return {k for k, shape in here.items() if k in more and more[k] != shape}


def module_names(keys: set[str]) -> set[str]:
    """``{"heads.0.conv.weight"} -> {"heads.0.conv"}``."""
    return {k.rsplit(".", 1)[0] for k in keys}


def channel_mean_stem(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A first convolution's weight ``(out, C_base, *k)`` for ``in_channels`` inputs: each new input channel gets
    the sum of the base channels' kernels over ``in_channels``, i.e. what the base computes when every base
    channel sees the mean of the new ones (grey from RGB, one MR sequence for two)."""
    summed = weight.sum(dim=1, keepdim=True) / in_channels
    return summed.expand(weight.shape[0], in_channels, *weight.shape[2:]).clone()


def transplant(network: nn.Module, base_state: dict[str, torch.Tensor], *, head: set[str], stem: set[str],
               keep_head: bool) -> None:
    """Copy ``base_state`` into ``network`` (built for the target): tensors of the same shape as they are (the
    head's only when ``keep_head``), the first convolution by :func:`channel_mean_stem` when its channels differ;
    any other difference is a MedsegError (not the base's architecture)."""
    state = network.state_dict()
    mismatched = sorted(set(base_state) ^ set(state))
    if mismatched:
        raise MedsegError(f"the base weights do not fit the network (e.g. {mismatched[0]})",
                          fix="adapt a model folder written by medseg train")
    for key, value in base_state.items():
        if key in head and not keep_head:
            continue
        if value.shape == state[key].shape:
            state[key] = value
        elif key in stem and value.ndim >= 3:
            state[key] = channel_mean_stem(value, state[key].shape[1])
        elif key not in head:
            raise MedsegError(f"the base weight {key} has shape {tuple(value.shape)}, the network "
                              f"{tuple(state[key].shape)}", fix="adapt a model folder written by medseg train")
    network.load_state_dict(state, strict=True)


def adapted_network(spec: ModelSpec, record: AdaptationRecord, base_state: dict[str, torch.Tensor] | None
                    ) -> nn.Module:
    """The network of ``spec`` (the target's) from the base weights (None: left as built), with the record's
    structure added. The head and a new stem get no LoRA or adapter: they are trained whole."""
    net = spec.network
    network = create(net.name, net.spatial_dims, net.in_channels, net.num_classes, **net.options)
    head = changing_keys(spec.network, "num_classes")
    stem = changing_keys(spec.network, "in_channels") if record.new_stem else set()
    if base_state is not None:
        transplant(network, base_state, head=head, stem=stem, keep_head=not record.new_head)
    add_structure(network, record.structure, PeftOptions.from_dict(record.options), skip=module_names(head | stem))
    return network


def load_adapted_network(model: str | Path, fold: int | str, spec: ModelSpec, *, device: str = "cpu"
                         ) -> nn.Module:
    """An adapted folder's network: base weights (checked against the recorded sha256) + the fold's deltas, or a
    merged folder's full weights; LoRA folded into the weights. Train mode; the caller sets eval."""
    record = adaptation_record(spec, model)
    weights = read_fold_weights(model, fold, device="cpu")
    if record.base is None:
        network = adapted_network(spec, record, None)
        _load(network, weights, model, fold, strict=True)
    else:
        base_dir = base_fold_folder(model, record)
        base_state = read_fold_weights(base_dir.parent, record.base.fold, device="cpu")
        network = adapted_network(spec, record, base_state)
        _load(network, weights, model, fold, strict=False)
    return merge_lora(network).to(device)


def _load(network: nn.Module, weights: dict[str, torch.Tensor], model, fold, *, strict: bool) -> None:
    state = network.state_dict()
    unknown = sorted(set(weights) - set(state))
    wrong = sorted(k for k in set(weights) & set(state) if weights[k].shape != state[k].shape)
    missing = sorted(set(state) - set(weights)) if strict else []
    if unknown or wrong or missing:
        example = (unknown or wrong or missing)[0]
        raise MedsegError(f"the adapted weights do not fit the network ({len(unknown)} unknown, {len(wrong)} of "
                          f"another shape, {len(missing)} missing, e.g. {example})", path=fold_folder(model, fold),
                          fix=f"the folder is inconsistent ({Path(model) / MODEL_JSON}); adapt again")
    state.update(weights)
    network.load_state_dict(state, strict=True)
