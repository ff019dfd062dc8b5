"""``medseg report BENCH``: one HTML page of a benchmark folder that ``medseg benchmark`` wrote: results, ranks
and the critical-difference diagram, paired comparisons, per-case box plots, the best and worst cases of each
dataset's best network as overlays, training curves and the plan's decisions."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from medseg.config import read_json
from medseg.errors import MedsegError
from medseg.report import html


def _cells(bench: Path, summary: dict) -> dict[str, dict[str, dict]]:
    cells = {}
    for dataset, row in summary["results"].items():
        cells[dataset] = {}
        for network in row:
            path = bench / dataset / network / "result.json"
            if not path.is_file():
                raise MedsegError("a cell of benchmark.json has no result.json", path=path,
                                  fix="rerun the same medseg benchmark command to finish it")
            cells[dataset][network] = read_json(path)
    return cells


def _results_section(cells: dict[str, dict[str, dict]]) -> str:
    parts = []
    for dataset, row in cells.items():
        networks = sorted(row, key=lambda n: -np.nan_to_num(row[n]["dice"], nan=-1.0))
        rows = [[n, row[n]["dice"], row[n]["hd95"], row[n]["steps"], row[n]["params"], row[n]["seconds_per_step"],
                 row[n].get("predict_seconds_per_case")] for n in networks]
        best_hd95 = int(np.nanargmin([r[2] for r in rows])) if rows else 0
        parts.append(f"<h3>{html.text(dataset)}</h3>" + html.table(
            ["network", "Dice", "HD95", "steps", "parameters", "s/step", "predict s/case"], rows,
            best={1: 0, 2: best_hd95}))
    return "\n".join(parts)


def _ranks_section(bench: Path, summary: dict) -> str:
    if "ranks" not in summary:
        return '<p class="note">Ranks need at least two networks scored on every dataset.</p>'
    table = summary["rank_table"]
    quality = summary.get("quality_per_compute", {})
    networks = sorted(summary["ranks"], key=lambda n: summary["ranks"][n])
    rows = [[n, summary["ranks"][n], summary["ranks_hd95"].get(n), quality.get(n)] for n in networks]
    note = (f'<p class="note">Average rank over {len(table["datasets"])} dataset(s) (1 = best). Friedman test over '
            f'the datasets: statistic {html.number(table["friedman_statistic"])}, p = '
            f'{html.number(table["friedman_p"], 4)}; Nemenyi critical difference at alpha {table["alpha"]}: '
            f'{html.number(table["critical_difference"], 2)} (networks whose average ranks differ by less are not '
            "significantly different). Quality per compute: harmonic mean of min-max-normalised Dice and "
            "efficiency (step time and parameters, log scale).</p>")
    content = html.table(["network", "rank (Dice)", "rank (HD95)", "quality per compute"], rows, best={1: 0})
    picture = bench / "critical_difference.png"
    if picture.is_file():
        content += html.figure(picture, "Critical-difference diagram of the Dice ranks")
    return content + note


def _comparisons_section(summary: dict) -> str:
    parts = []
    for dataset, pairs in summary.get("comparisons_dice", {}).items():
        rows = [[f"{p['a']} - {p['b']}", p["n"], p["mean_difference"], f"[{p['ci_low']:.3f}, {p['ci_high']:.3f}]",
                 p["wilcoxon_p"], p["wilcoxon_p_holm"]] for p in pairs]
        parts.append(f"<h3>{html.text(dataset)}</h3>" + html.table(
            ["pair", "cases", "mean Dice difference", "95 % CI (paired bootstrap)", "Wilcoxon p", "Holm p"], rows))
    if not parts:
        return '<p class="note">Paired comparisons need at least two networks on a dataset.</p>'
    return "\n".join(parts) + ('<p class="note">Per-case paired comparisons on the held-out block: Wilcoxon '
                               "signed-rank test (scipy.stats), paired bootstrap of the mean difference (2000 "
                               "resamples), p-values Holm-corrected over the pairs of each dataset.</p>")


def _box_plots(cells: dict[str, dict[str, dict]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    for dataset, row in cells.items():
        networks = sorted(row)
        values = [[v for v in row[n]["per_case"]["dice"].values() if v == v] for n in networks]
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(networks), 3.2))
        ax.boxplot(values, showmeans=True)
        ax.set_xticks(range(1, len(networks) + 1), networks, rotation=30, ha="right")
        ax.set_ylabel("Dice per case")
        ax.set_title(dataset)
        figures.append(html.figure(html.matplotlib_png(fig), f"{dataset}: per-case Dice of every network"))
    return "".join(figures)


def _case_files(folder: Path, case: str) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(f"{case}_") or p.name.split(".")[0] == case)


def _overlay(bench: Path, dataset: str, network: str, case: str) -> bytes | None:
    from medseg.io import read_image
    from medseg.visualize import save_overlay

    images = _case_files(bench / dataset / "test" / "images", case)
    labels = _case_files(bench / dataset / "test" / "labels", case)
    predictions = _case_files(bench / dataset / network / "predictions", case)
    if not images or not labels or not predictions:
        return None
    image = read_image(images[0]).array.astype(np.float32).mean(axis=0)
    reference, prediction = read_image(labels[0]).array[0], read_image(predictions[0]).array[0]
    scale = max(1, 256 // max(image.shape[-2:]))
    with tempfile.TemporaryDirectory() as folder:
        path = save_overlay(image, prediction, reference, Path(folder) / "overlay.png", scale=scale)
        return path.read_bytes()


def _cases_section(bench: Path, cells: dict[str, dict[str, dict]]) -> str:
    figures = []
    for dataset, row in cells.items():
        network = max(row, key=lambda n: np.nan_to_num(row[n]["dice"], nan=-1.0))
        dice = {c: v for c, v in row[network]["per_case"]["dice"].items() if v == v}
        if not dice:
            continue
        for which, case in (("best", max(dice, key=dice.get)), ("worst", min(dice, key=dice.get))):
            png = _overlay(bench, dataset, network, case)
            if png is not None:
                figures.append(html.figure(png, f"{dataset}, {network}, {which} case {case}: Dice "
                                                f"{dice[case]:.3f} (prediction filled, reference outlined)"))
    return "".join(figures) or '<p class="note">No predictions to show.</p>'


def _curves_section(bench: Path, cells: dict[str, dict[str, dict]]) -> str:
    figures = []
    for dataset, row in cells.items():
        for network in sorted(row):
            curves = bench / dataset / network / "model" / "fold_all" / "progress.png"
            if curves.is_file():
                figures.append(html.figure(curves, f"{dataset}, {network}: training loss by step"))
    return "".join(figures) or '<p class="note">No training curves were written.</p>'


def _plans_section(bench: Path, cells: dict[str, dict[str, dict]]) -> str:
    parts = []
    for dataset, row in cells.items():
        plans = bench / dataset / "plans.json"
        if not plans.is_file():
            continue
        configuration = next(iter(row.values()))["configuration"]
        decisions = read_json(plans)["configurations"][configuration].get("decisions", [])
        rows = [[d["field"], json.dumps(d["value"]), d["reason"]] for d in decisions]
        parts.append(f"<h3>{html.text(dataset)} ({html.text(configuration)})</h3>"
                     + html.table(["field", "value", "reason"], rows))
    return "\n".join(parts)


def benchmark_report(bench: str | Path) -> str:
    """The HTML page of the benchmark folder ``bench``."""
    bench = Path(bench)
    summary_path = bench / "benchmark.json"
    if not summary_path.is_file():
        raise MedsegError("not a benchmark folder (no benchmark.json)", path=bench,
                          fix="run medseg benchmark ... -o BENCH first, or pass a model folder")
    summary = read_json(summary_path)
    cells = _cells(bench, summary)
    first = next((c for row in cells.values() for c in row.values()), {})
    subtitle = (f"{sum(len(r) for r in cells.values())} cells: {len(cells)} dataset(s) x "
                f"{len({n for r in cells.values() for n in r})} network(s), training budget "
                f"{first.get('budget_seconds', '?')} s each, scored on each dataset's held-out block.")
    sections = [
        ("Results on the held-out block", _results_section(cells)),
        ("Ranks across datasets", _ranks_section(bench, summary)),
        ("Paired comparisons", _comparisons_section(summary)),
        ("Per-case Dice", _box_plots(cells)),
        ("Best and worst cases of each dataset's best network", _cases_section(bench, cells)),
        ("Training curves", _curves_section(bench, cells)),
        ("The plan's decisions", _plans_section(bench, cells)),
    ]
    return html.page("medseg benchmark", sections, subtitle=subtitle)
