"""``medseg report MODEL``: one HTML page of a model folder: its WeightsCard, the network, the plan's decisions,
each fold's training curves and held-out figures."""

from __future__ import annotations

import json
from pathlib import Path

from medseg.config import read_json
from medseg.config.model_folder import available_folds, fold_folder, read_model_spec
from medseg.report import html


def _card_section(spec) -> str:
    card = spec.card.to_dict()
    figures = card.pop("figures", {})
    rows = [[key.replace("_", " "), json.dumps(value) if isinstance(value, (list, dict)) else value]
            for key, value in card.items()]
    content = html.table(["", "value"], rows)
    folds = []
    for fold, values in sorted(figures.items()):
        dice = values.get("validation_dice") if isinstance(values, dict) else None
        if dice:
            folds.append([fold, values.get("steps"), values.get("train_cases"),
                          ", ".join(f"{k}: {v:.3f}" for k, v in dice.items())])
    if folds:
        content += html.table(["fold", "steps", "training cases", "held-out Dice per label"], folds)
    return content


def _network_section(spec) -> str:
    network = spec.network.to_dict()
    rows = [[key, json.dumps(value) if isinstance(value, (list, dict)) else value] for key, value in network.items()]
    return html.table(["", "value"], rows + [["task", spec.task], ["configuration", spec.configuration],
                                              ["label values", json.dumps(spec.label_values)]])


def _plan_section(folder: Path, configuration: str | None) -> str:
    plans = folder / "plans.json"
    if not plans.is_file() or configuration is None:
        return '<p class="note">This model folder has no plan (not a pipeline model).</p>'
    decisions = read_json(plans)["configurations"].get(configuration, {}).get("decisions", [])
    return html.table(["field", "value", "reason"], [[d["field"], json.dumps(d["value"]), d["reason"]]
                                                     for d in decisions])


def _curves_section(folder: Path) -> str:
    figures = []
    for fold in available_folds(folder):
        curves = fold_folder(folder, fold) / "progress.png"
        if curves.is_file():
            figures.append(html.figure(curves, f"fold {fold}: training loss and validation figures by step"))
    return "".join(figures) or '<p class="note">No training curves in this folder.</p>'


def model_report(folder: str | Path) -> str:
    """The HTML page of the model folder ``folder`` (any task; read with ``read_model_spec``)."""
    folder = Path(folder)
    spec = read_model_spec(folder)
    sections = [("Weights card", _card_section(spec)), ("Network", _network_section(spec)),
                ("The plan's decisions", _plan_section(folder, spec.configuration)),
                ("Training curves", _curves_section(folder))]
    return html.page(f"medseg model: {folder.name}", sections,
                     subtitle=f"{spec.task} model, folds {', '.join(available_folds(folder)) or 'none'}")
