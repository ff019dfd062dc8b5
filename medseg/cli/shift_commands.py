"""The ``shift`` command: how far one dataset lies from another in a feature space, per dataset and per case
(heavy imports inside the function)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def shift(
    first: Path = typer.Argument(..., help="DATASET_A, the reference; with --fit: the MODEL folder."),
    second: Path = typer.Argument(..., help="DATASET_B, compared with A; with --fit: the model's training "
                                  "DATASET."),
    fit: bool = typer.Option(False, "--fit", help="Fit the per-case out-of-distribution reference on DATASET and "
                             "store it in MODEL (shift_reference.json); medseg predict then writes ood.json."),
    features: str = typer.Option("texture", "--features", help="texture (intensity statistics, gradients, GLCM "
                                 "texture) or encoder (the deepest encoder stage of --model)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model folder whose encoder gives the features "
                                         "(with --features encoder)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the result as JSON here."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUTPUT (default: refuse)."),
) -> None:
    """Fréchet distance between two datasets' feature distributions, and each of B's cases' Mahalanobis
    distance from A (with the AUROC of telling B's cases from A's); or, with --fit, a model's OOD reference."""
    from medseg.config import write_json_atomic
    from medseg.data import open_dataset
    from medseg.errors import MedsegError
    from medseg.output_paths import prepare_output_file
    from medseg.trust.features import FEATURE_SETS, dataset_features
    from medseg.trust.shift import dataset_distance, fit_model_reference, fit_reference, ood_auroc

    if features not in FEATURE_SETS:
        raise MedsegError(f"--features {features!r} is not one of {', '.join(FEATURE_SETS)}",
                          fix="use --features texture")
    if output is not None:
        prepare_output_file(output, inputs=[first, second], overwrite=overwrite)
    if fit:
        if not (first / "model.json").is_file():
            raise MedsegError("not a medseg model folder (no model.json)", path=first,
                              fix="medseg shift --fit MODEL DATASET: the model folder comes first")
        open_dataset(second).require_cases()
        reference = fit_model_reference(first, second, feature_set=features)
        typer.echo(f"fitted the {features} shift reference on {reference.cases} cases of {second}; flag above "
                   f"Mahalanobis {reference.threshold:.2f}; wrote {first / 'shift_reference.json'}")
        if output is not None:
            write_json_atomic(reference.to_dict(), output)
        return
    if features == "encoder" and model is None:
        raise MedsegError("--features encoder needs --model MODEL", fix="pass the model folder, or use texture")
    for dataset in (first, second):
        open_dataset(dataset).require_cases()  # both checked before the features of either are computed
    table_a = dataset_features(first, feature_set=features, model=model)
    table_b = dataset_features(second, feature_set=features, model=model)
    result = dataset_distance(table_a, table_b)
    reference = fit_reference(table_a)
    scores = dict(zip(table_b.case_ids, reference.scores(table_b.values)))
    auroc = ood_auroc(reference.loo_distances, [s["mahalanobis"] for s in scores.values()])
    flagged = sum(s["out_of_distribution"] for s in scores.values())
    typer.echo(f"Fréchet distance ({features} features, {result.cases_a} vs {result.cases_b} cases): "
               f"{result.distance:.4g}")
    typer.echo(f"OOD: {flagged} of {len(scores)} cases of B beyond A's 95th percentile; AUROC of B's cases vs "
               f"A's (leave-one-out) {auroc:.3f}")
    typer.echo("largest mean differences, B - A (in standard deviations of both): " + ", ".join(
        f"{name} {value:+.2f}" for name, value in result.largest_differences.items()))
    if output is not None:
        write_json_atomic({"dataset_a": str(first), "dataset_b": str(second), **result.to_dict(),
                           "ood_auroc": auroc, "ood_threshold": reference.threshold, "case_scores_b": scores}, output)
        typer.echo(f"wrote {output}")
