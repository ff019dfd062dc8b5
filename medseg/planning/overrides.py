"""``--set key=value`` overrides on a plan: ``3d_fullres.batch_size=4``, ``patch_size=[64,64,64]`` (all configs)."""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np

from medseg.config import Configuration, Plan
from medseg.errors import MedsegError

_EDITABLE = {f.name for f in fields(Configuration)} - {"name", "decisions", "network_name"}  # network: --network


def apply_overrides(plan: Plan, assignments: list[str]) -> Plan:
    """Apply each ``[config.]field[.subfield]=json`` in order; the change is recorded as a decision."""
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key:
            raise MedsegError(f"override {assignment!r} is not key=value", fix="write e.g. 3d_fullres.batch_size=4")
        value = _parse(raw)
        key = key.strip()
        named = [n for n in plan.configurations if key.startswith(n + ".")]  # "2.5d.patch_size": names hold dots
        targets = list(plan.configurations.values())
        parts = key.split(".")
        if named:
            name = max(named, key=len)
            targets, parts = [plan.configurations[name]], key[len(name) + 1:].split(".")
        if not parts or parts[0] not in _EDITABLE:
            raise MedsegError(f"cannot override {key!r}",
                              fix=f"name a configuration ({', '.join(plan.configurations)}) and a field "
                                  f"({', '.join(sorted(_EDITABLE))})")
        for config in targets:
            _assign(config, parts, value, key)
            if parts == ["slice_context"]:
                _restack(config, value, len(plan.channel_names))
            config.decide(".".join(parts), value, f"set by the user (--set {assignment})")
            _validate(config)
        plan.overrides.append(assignment)
    return plan


def parse_network_overrides(assignments: list[str]) -> dict:
    """``["net.feature_size=24", "net.depths=[2,2,2,2]"]`` -> ``{"feature_size": 24, "depths": [2, 2, 2, 2]}``
    (values are JSON, else strings): options for ``medseg train --network``."""
    options = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        name = key.strip().removeprefix("net.")
        if not sep or not key.strip().startswith("net.") or not name:
            raise MedsegError(f"--set {assignment!r} is not net.KEY=VALUE",
                              fix="write e.g. --set net.feature_size=24; plan fields are set with medseg plan --set")
        options[name] = _parse(raw)
    return options


def _parse(raw: str):
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _assign(config: Configuration, parts: list[str], value, key: str) -> None:
    if len(parts) == 1:
        setattr(config, parts[0], value)
        return
    container = getattr(config, parts[0])
    if not isinstance(container, dict) or len(parts) != 2:
        raise MedsegError(f"cannot override {key!r}: {parts[0]} has no sub-field {'.'.join(parts[1:])}",
                          fix=f"set the whole {parts[0]} or one of its keys")
    container[parts[1]] = value


def _restack(config: Configuration, context, channels: int) -> None:
    """``slice_context`` set: a 2D configuration's network takes ``channels * (1 + 2 * context)`` input channels."""
    if not isinstance(context, int) or context < 0 or (context and config.spatial_dims != 2):
        raise MedsegError(f"{config.name}: slice_context {context!r} is not a slice count >= 0 of a 2D configuration",
                          fix="set e.g. 2.5d.slice_context=1 (3 slices)")
    config.network["in_channels"] = channels * (1 + 2 * context)


def _validate(config: Configuration) -> None:
    if "strides" not in config.network:  # a zoo network (--network) checks its patch itself
        return
    strides = np.array(config.network["strides"])
    divisor = np.prod(strides, axis=0)
    if len(config.patch_size) != config.spatial_dims or np.any(np.array(config.patch_size) % divisor):
        raise MedsegError(f"{config.name}: patch_size {config.patch_size} is not a multiple of the network's "
                          f"downsampling {divisor.tolist()}",
                          fix=f"use multiples of {divisor.tolist()} or also override network.strides")
    if int(config.batch_size) < 1:
        raise MedsegError(f"{config.name}: batch_size must be >= 1", fix="set batch_size to 1 or more")
