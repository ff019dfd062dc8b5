"""The active-learning curve as a PNG: held-out Dice vs labelled cases, a line per strategy, a band of one sd over
the seeds."""

from __future__ import annotations

from pathlib import Path

from medseg.atomic import atomic_write


def write_curve_png(curve: dict[str, dict[str, list]], path: str | Path, *, title: str = "") -> Path:
    """``curve``: ``medseg.active.loop.curve``'s summary; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axes = plt.subplots(figsize=(6, 4))
    for strategy, line in curve.items():
        counts = np.asarray(line["labelled"])
        mean, sd = np.asarray(line["mean_dice"]), np.asarray(line["sd_dice"])
        axes.plot(counts, mean, marker="o", label=f"{strategy} ({max(line['seeds'], default=0)} seeds)")
        axes.fill_between(counts, mean - sd, mean + sd, alpha=0.2)
    axes.set_xlabel("labelled cases")
    axes.set_ylabel("held-out Dice (mean over seeds)")
    axes.set_title(f"active learning{': ' + title if title else ''}")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    try:
        return atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=100))
    finally:
        plt.close(figure)
