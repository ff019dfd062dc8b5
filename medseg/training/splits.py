"""Cross-validation splits: random k-fold, contiguous blocks (video frames), or grouped by a case -> group map."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.config import read_json, write_json_atomic
from medseg.errors import MedsegError


def make_splits(case_ids: list[str], *, folds: int = 5, seed: int = 12345, mode: str = "random",
                groups: dict[str, str] | None = None) -> list[dict[str, list[str]]]:
    """``[{"train": [...], "val": [...]}] * folds``.

    ``mode="random"``: shuffled cases dealt into folds; ``"blocks"``: sorted case ids cut into contiguous blocks
    (neighbouring frames of a video stay together); ``groups``: whole groups go to one fold (groups shuffled,
    each given to the currently smallest fold).
    """
    ids = sorted(case_ids)
    if len(ids) < 2:
        raise MedsegError(f"{len(ids)} case(s): cross-validation needs at least 2", fix="train with -f all")
    folds = min(folds, len(ids))
    rng = np.random.default_rng(seed)
    if groups is not None:
        missing = [i for i in ids if i not in groups]
        if missing:
            raise MedsegError(f"{len(missing)} case(s) have no group, e.g. {missing[0]}",
                              fix="give every case a group in the groups file")
        members: dict[str, list[str]] = {}
        for case_id in ids:
            members.setdefault(str(groups[case_id]), []).append(case_id)
        order = list(members)
        rng.shuffle(order)
        buckets: list[list[str]] = [[] for _ in range(folds)]
        for group in sorted(order, key=lambda g: -len(members[g])):
            min(buckets, key=len).extend(members[group])
    elif mode == "blocks":
        buckets = [list(b) for b in np.array_split(np.array(ids, dtype=object), folds)]
    elif mode == "random":
        shuffled = list(ids)
        rng.shuffle(shuffled)
        buckets = [sorted(shuffled[k::folds]) for k in range(folds)]
    else:
        raise MedsegError(f"unknown split mode {mode!r}", fix="use random or blocks")
    return [{"train": sorted(c for b in buckets[:k] + buckets[k + 1:] for c in b), "val": sorted(buckets[k])}
            for k in range(folds)]


def load_or_make_splits(path: Path, case_ids: list[str], **kwargs) -> list[dict[str, list[str]]]:
    """Reuse ``splits.json`` when it exists (folds must stay fixed across runs), else make and record it."""
    if path.is_file():
        return read_json(path)
    splits = make_splits(case_ids, **kwargs)
    write_json_atomic(splits, path)
    return splits


def fold_cases(splits: list[dict[str, list[str]]], fold: int | str, case_ids: list[str]) -> tuple[list[str], list[str]]:
    """(train, val) case ids of ``fold``; ``"all"`` trains on every case and validates on all of them."""
    if str(fold) == "all":
        return sorted(case_ids), sorted(case_ids)
    index = int(fold)
    if not 0 <= index < len(splits):
        raise MedsegError(f"fold {fold} does not exist ({len(splits)} folds)",
                          fix=f"use -f 0..{len(splits) - 1} or -f all")
    return splits[index]["train"], splits[index]["val"]
