"""Class weights for weighted losses, computed from a dataset fingerprint's class voxel fractions."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Literal

from medseg.errors import MedsegError

Method = Literal["inverse", "median", "inverse_sqrt"]


def _fractions(class_voxel_fraction: Mapping[str | int, float], num_classes: int | None) -> list[float]:
    try:
        table = {int(label): float(value) for label, value in class_voxel_fraction.items()}
    except (TypeError, ValueError) as error:
        raise MedsegError(f"class_voxel_fraction must map label values to fractions: {error}",
                          fix="use the fingerprint's class_voxel_fraction, e.g. {'0': 0.97, '1': 0.03}") from None
    if not table:
        raise MedsegError("class_voxel_fraction is empty", fix="re-run the fingerprint on labelled data")
    if min(table) < 0 or any(v < 0 for v in table.values()):
        raise MedsegError(f"negative label or fraction in class_voxel_fraction {class_voxel_fraction}")
    count = max(table) + 1 if num_classes is None else num_classes
    if max(table) >= count:
        raise MedsegError(f"class_voxel_fraction has label {max(table)} but num_classes={count}")
    return [table.get(label, 0.0) for label in range(count)]


def class_weights_from_fractions(
    class_voxel_fraction: Mapping[str | int, float],
    *,
    method: Method = "median",
    num_classes: int | None = None,
) -> list[float]:
    r"""One weight per class (label 0, 1, ... C-1) from voxel fractions :math:`f_c`, normalised to mean 1.

    - ``inverse``: :math:`w_c \propto 1 / f_c` (inverse frequency);
    - ``median``: :math:`w_c = \operatorname{median}(f) / f_c` (median-frequency balancing, Eigen & Fergus,
      "Predicting Depth, Surface Normals and Semantic Labels", ICCV 2015), the default;
    - ``inverse_sqrt``: :math:`w_c \propto (\sum_k f_k / f_c)^{1/2}` (Wong et al., MICCAI 2018, the label
      weights of the exponential-logarithmic loss).

    A class that never occurs (fraction 0 or missing from the mapping) gets the largest weight of the others.
    ``class_voxel_fraction`` is the fingerprint's ``{label value as str: fraction}``; ``num_classes`` defaults to
    the largest label + 1. Pass the result as ``class_weight=`` to any loss.
    """
    fractions = _fractions(class_voxel_fraction, num_classes)
    seen = [f for f in fractions if f > 0]
    if not seen:
        raise MedsegError("every class voxel fraction is 0", fix="re-run the fingerprint on labelled data")
    if method == "inverse":
        raw = [1 / f if f > 0 else 0.0 for f in fractions]
    elif method == "median":
        median = statistics.median(seen)
        raw = [median / f if f > 0 else 0.0 for f in fractions]
    elif method == "inverse_sqrt":
        total = sum(fractions)
        raw = [(total / f) ** 0.5 if f > 0 else 0.0 for f in fractions]
    else:
        raise MedsegError(f"method={method!r} is not valid", fix="use 'inverse', 'median' or 'inverse_sqrt'")
    largest = max(raw)
    raw = [w if w > 0 else largest for w in raw]
    mean = sum(raw) / len(raw)
    return [w / mean for w in raw]
