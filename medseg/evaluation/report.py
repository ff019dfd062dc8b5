"""Writing evaluation results: per-case CSV, JSON summary and one box plot per metric, each written atomically."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from medseg.atomic import atomic_write


def _number(value: float) -> str:
    return repr(float(value)) if math.isfinite(value) else ("nan" if math.isnan(value) else str(value))


def write_csv(rows: list[dict], metrics: tuple[str, ...], path: Path) -> Path:
    """One row per (case, class): ``case,class,<metric>...``; NaN and inf are written as ``nan``/``inf``."""

    def write(temporary: Path) -> None:
        with open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["case", "class", *metrics])
            for row in rows:
                writer.writerow([row["case"], row["class"], *(_number(row[m]) for m in metrics)])

    return atomic_write(path, write)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(data: dict, path: Path) -> Path:
    """Strict JSON: NaN becomes null and infinities the strings "inf" / "-inf"."""
    return atomic_write(path, lambda t: t.write_text(json.dumps(_json_safe(data), indent=2, allow_nan=False)))


def write_box_plots(rows: list[dict], classes: list[str], metrics: tuple[str, ...], folder: Path) -> list[Path]:
    """One PNG per metric, one box per class over the finite per-case values (non-finite ones are counted in the
    x-axis label)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medseg.metrics.conventions import convention

    paths = []
    for metric in metrics:
        row = convention(metric)
        data, names = [], []
        for name in classes:
            values = [r[metric] for r in rows if r["class"] == name]
            finite = [v for v in values if math.isfinite(v)]
            data.append(finite)
            skipped = len(values) - len(finite)
            names.append(f"{name}\n(n={len(finite)}" + (f", {skipped} non-finite)" if skipped else ")"))
        figure, axes = plt.subplots(figsize=(max(5.5, 1.4 * len(classes) + 1.5), 4.0))
        axes.boxplot(data, showmeans=True)
        axes.set_xticks(range(1, len(names) + 1), names)
        axes.set_ylabel(f"{metric} ({row.unit})" if row.unit != "1" else metric)
        axes.set_title(f"{row.name}\n({'higher' if row.higher_is_better else 'lower'} is better)", fontsize=10)
        axes.grid(axis="y", alpha=0.3)
        figure.tight_layout()
        paths.append(atomic_write(Path(folder) / f"{metric}.png", lambda t: figure.savefig(t, dpi=100, format="png")))
        plt.close(figure)
    return paths
