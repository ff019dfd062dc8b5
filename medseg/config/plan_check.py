"""Type checks of a ``plans.json`` before it becomes a ``Plan``: a field edited by hand to a wrong type or value is
one ``MedsegError`` naming the file, the configuration, the field and the fix, not a traceback in a loader."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from medseg.errors import MedsegError

SCHEMES = ("ct", "zscore", "rgb", "rescale01", "none")


def check_plan_dict(data: Any, *, path: str | Path | None = None, schema_version: int = 1) -> None:
    """Raise a ``MedsegError`` for the first field of ``data`` (a parsed ``plans.json``) that ``Plan.from_dict``
    cannot use: missing or unknown keys, wrong types, sizes that are not positive, lists of the wrong length."""
    where = _Where(path)
    if not isinstance(data, dict):
        where.fail("the plan is not a JSON object")
    version = data.get("schema_version", 1)
    if not _is_int(version) or version > schema_version:
        where.fail(f"schema_version {version!r} is not one this medseg reads (<= {schema_version})",
                   fix="re-run medseg plan with this medseg version")
    configurations = data.get("configurations")
    if not isinstance(configurations, dict) or not configurations:
        where.fail(f"configurations is {_show(configurations)}, not an object of named configurations")
    for name, raw in configurations.items():
        _check_configuration(raw, where.inside(name))


_REQUIRED = ("spatial_dims", "target_spacing", "median_shape", "normalization", "resampling", "patch_size",
             "batch_size", "network", "estimated_memory_bytes", "estimated_step_seconds", "num_iterations")
_OPTIONAL = ("name", "previous_stage", "decisions", "network_name", "slice_context", "instances", "raters")


def _check_configuration(raw: Any, where: "_Where") -> None:
    if not isinstance(raw, dict):
        where.fail(f"is {_show(raw)}, not an object")
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        where.fail(f"lacks {', '.join(missing)}")
    unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        where.fail(f"has unknown field(s) {', '.join(unknown)}", fix="remove them")
    dims = raw["spatial_dims"]
    where.require(raw, "spatial_dims", lambda v: _is_int(v) and v in (2, 3), "2 or 3")
    where.require(raw, "patch_size", lambda v: _ints(v, dims), f"a list of {dims} positive integers")
    where.require(raw, "median_shape", lambda v: _ints(v, None), "a list of positive integers")
    where.require(raw, "target_spacing", lambda v: _positive_numbers(v, dims), f"a list of {dims} positive mm")
    where.require(raw, "batch_size", lambda v: _is_int(v) and v >= 1, "a positive integer")
    where.require(raw, "num_iterations", lambda v: _is_int(v) and v >= 1, "a positive integer")
    where.require(raw, "estimated_memory_bytes", lambda v: _is_int(v) and v >= 0, "a non-negative integer")
    where.require(raw, "estimated_step_seconds", lambda v: _is_number(v) and v >= 0, "a non-negative number")
    where.require(raw, "network_name", lambda v: isinstance(v, str) and v, "a network name", optional=True)
    where.require(raw, "previous_stage", lambda v: v is None or isinstance(v, str), "null or a name", optional=True)
    where.require(raw, "slice_context", lambda v: _is_int(v) and v >= 0 and (v == 0 or dims == 2),
                  "0, or for a 2D configuration a number of neighbouring slices >= 0", optional=True)
    where.require(raw, "instances", lambda v: isinstance(v, bool), "true or false", optional=True)
    where.require(raw, "raters", lambda v: _is_int(v) and v >= 0, "a number of raters >= 0", optional=True)
    where.require(raw, "normalization", lambda v: isinstance(v, list) and v and all(isinstance(n, dict) for n in v),
                  "a list of one {\"scheme\": ...} object per channel")
    for index, entry in enumerate(raw["normalization"]):
        if entry.get("scheme") not in SCHEMES:
            scheme = _show(entry.get("scheme"))
            where.fail(f"normalization[{index}].scheme is {scheme}, not one of {', '.join(SCHEMES)}")
    where.require(raw, "resampling", _resampling, "an object with image_order and z_order 0..5, a label method "
                  "name, separate_z true/false")
    where.require(raw, "network", lambda v: isinstance(v, dict), "an object of network arguments")
    network = raw["network"]
    for key in ("in_channels", "num_classes"):
        if key in network and not (_is_int(network[key]) and network[key] >= 1):
            where.fail(f"network.{key} is {_show(network[key])}, not a positive integer")
    if network.get("spatial_dims", dims) != dims:
        where.fail(f"network.spatial_dims is {_show(network['spatial_dims'])}, the configuration's is {dims}")
    features = network.get("features_per_stage")
    if features is not None and not _ints(features, None):
        where.fail(f"network.features_per_stage is {_show(features)}, not a list of positive integers")


def _resampling(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    orders_ok = all(_is_int(value.get(key, 0)) and 0 <= value.get(key, 0) <= 5 for key in ("image_order", "z_order"))
    return orders_ok and isinstance(value.get("label", ""), str) and isinstance(value.get("separate_z", False), bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _ints(value: Any, length: int | None) -> bool:
    return isinstance(value, list) and bool(value) and (length is None or len(value) == length) and all(
        _is_int(v) and v >= 1 for v in value)


def _positive_numbers(value: Any, length: int) -> bool:
    return isinstance(value, list) and len(value) == length and all(_is_number(v) and v > 0 for v in value)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Where:
    """Where in which file a field is, for the error message."""

    def __init__(self, path: str | Path | None, configuration: str | None = None):
        self.path, self.configuration = path, configuration

    def inside(self, configuration: str) -> "_Where":
        return _Where(self.path, configuration)

    def require(self, raw: dict, key: str, valid: Callable[[Any], bool], expected: str, *,
                optional: bool = False) -> None:
        if optional and key not in raw:
            return
        if not valid(raw[key]):
            self.fail(f"{key} is {_show(raw[key])}, not {expected}")

    def fail(self, message: str, *, fix: str | None = None) -> None:
        prefix = f"configuration {self.configuration!r}: " if self.configuration else ""
        named = "" if self.path is not None else "plans.json: "
        raise MedsegError(f"{named}{prefix}{message}", path=self.path,
                          fix=fix or "correct the field (see the other configurations) or re-run medseg plan")
