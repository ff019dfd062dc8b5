"""The annotation page's examples mode: the structure the user marked on a few slices of a volume (or on other open
2D images) is the support set of the in-context model, which fills in the rest; prompts refine what it filled.
This sits above both ``medseg.interactive`` (the session) and ``medseg.incontext`` (the model)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from medseg.errors import MedsegError
from medseg.incontext.session import InContextSession
from medseg.incontext.support import SupportSet
from medseg.interactive.session import InteractiveSession

MAX_EXAMPLES = 16  # support slices per target slice


def examples_of(session: InteractiveSession, label: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A 2D image's ``(C, H, W)`` array and its mask of ``label`` ``(H, W)`` bool, as another image's example;
    None when it is not 2D or does not hold the structure. (Call it under that image's lock.)"""
    if session.image.ndim != 2:
        return None
    mask = session.mask() == label
    return (session.image.array, mask) if mask.any() else None


def fill_from_examples(model: InContextSession, session: InteractiveSession, label: int,
                       others: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> tuple[list[int], int]:
    """Fill ``session``'s slices of structure ``label`` from examples; returns (the slices filled, the number of
    examples). A volume: its annotated slices are the examples, each other slice is segmented with the nearest
    ones in position (slices beyond the examples' extent stay empty). A 2D image: ``others`` (``examples_of`` the
    other open 2D images) are the examples."""
    image = session.image
    if image.ndim == 3:
        annotated = session.annotated_slices(label)
        if not annotated:
            raise MedsegError(f"no slice of structure {label} is marked yet",
                              fix="prompt or paint the structure on a few slices, then fill from them")
        examples = np.zeros(image.spatial_shape, bool)
        for index in annotated:
            examples[index] = session.slice_mask(index, label)
        support = SupportSet.from_arrays([image.array], [examples])
        prediction = model.predict(image, support, k=min(len(annotated), MAX_EXAMPLES), nearest=True)
        rest = {i: prediction.probability[i] for i in range(session.num_slices) if i not in annotated}
        return session.fill(rest, label), len(annotated)
    pairs = list(others)
    if not pairs:
        raise MedsegError(f"no other open 2D image holds structure {label}",
                          fix="open a few images of the same kind, mark the structure on them, then come back to "
                              "this one and fill it from them")
    support = SupportSet.from_arrays([p[0] for p in pairs[-MAX_EXAMPLES:]], [p[1] for p in pairs[-MAX_EXAMPLES:]])
    prediction = model.predict(image, support)
    return session.fill({0: prediction.probability}, label), len(support)
