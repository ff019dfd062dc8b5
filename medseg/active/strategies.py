"""Which unlabelled cases to label next: the query strategies of ``medseg active``.

Each strategy ranks the unlabelled pool with the current round's model and takes the ``count`` best:

  random                 a seeded random draw (the baseline every strategy must beat)
  entropy                the highest mean voxel entropy of the model's class probabilities (the model is least sure)
  ensemble-disagreement  the highest mean mutual information between several models trained on the same labels
                         with different seeds (where they disagree, not merely where each is unsure: BALD with an
                         ensemble)
  coreset                k-center greedy (Sener & Savarese 2018) on the model's encoder features: repeatedly the pool
                         case farthest from every labelled or already chosen case, so the labels cover the data
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from medseg.errors import MedsegError

STRATEGIES = ("random", "entropy", "ensemble-disagreement", "coreset")


def check_strategies(names: Sequence[str]) -> list[str]:
    """``names`` without repeats, each checked against ``STRATEGIES``."""
    chosen = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    unknown = [n for n in chosen if n not in STRATEGIES]
    if unknown or not chosen:
        raise MedsegError(f"unknown query strateg{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown) or '(none)'}",
                          fix=f"use some of {', '.join(STRATEGIES)}, comma-separated")
    return chosen


def mean_entropy(probabilities: np.ndarray) -> float:
    """Mean over voxels of the entropy (nats) of ``probabilities`` ``(K, *spatial)``."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0)
    return float(-(p * np.log(p)).sum(0).mean())


def mean_mutual_information(member_probabilities: Sequence[np.ndarray]) -> float:
    """Mean over voxels of the mutual information between the members' predictions: entropy of the members' mean
    minus the members' mean entropy; each member ``(K, *spatial)``."""
    if len(member_probabilities) < 2:
        raise MedsegError("ensemble disagreement needs at least two members", fix="use --members 2 or more")
    mean = np.mean([np.asarray(p, dtype=np.float64) for p in member_probabilities], axis=0)
    return max(mean_entropy(mean) - float(np.mean([mean_entropy(p) for p in member_probabilities])), 0.0)


def top_scored(scores: dict[str, float], count: int) -> list[str]:
    """The ``count`` case ids of highest score (ties: the smaller id first)."""
    return [case for case, _ in sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:count]]


def random_draw(pool: Sequence[str], count: int, rng: np.random.Generator) -> list[str]:
    """``count`` ids of ``pool`` drawn without replacement."""
    ordered = sorted(pool)
    return [ordered[i] for i in sorted(rng.choice(len(ordered), size=count, replace=False))]


def k_center_greedy(pool_features: np.ndarray, labelled_features: np.ndarray, count: int) -> list[int]:
    """Indices into ``pool_features`` ``(P, F)`` of ``count`` cases chosen greedily: each the one farthest
    (Euclidean, features standardised over pool and labelled together) from its nearest labelled
    (``labelled_features`` ``(L, F)``) or already chosen case."""
    if count > len(pool_features):
        raise MedsegError(f"{count} cases asked of a pool of {len(pool_features)}", fix="query fewer cases")
    every = np.concatenate([labelled_features, pool_features]).astype(np.float64)
    centre, scale = every.mean(0), every.std(0)
    scale[scale == 0] = 1.0
    pool = (pool_features - centre) / scale
    labelled = (labelled_features - centre) / scale

    def distances_to(points: np.ndarray) -> np.ndarray:
        return np.sqrt(((pool[:, None, :] - points[None, :, :]) ** 2).sum(-1)).min(1)

    nearest = distances_to(labelled) if len(labelled) else np.full(len(pool), np.inf)
    chosen: list[int] = []
    for _ in range(count):
        nearest[chosen] = -1.0
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        nearest = np.minimum(nearest, distances_to(pool[pick:pick + 1]))
    return chosen
