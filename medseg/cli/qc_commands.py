"""The ``qc`` command: fit a model folder's label-free quality control on its cross-validation cases, or list a
prediction folder's cases, most likely failures first (``medseg.trust.qc``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def qc(
    target: Path = typer.Argument(..., help="A prediction folder of medseg predict (its qc/ scores are listed); "
                                  "with --fit: the MODEL folder."),
    fit: bool = typer.Option(False, "--fit", help="Fit the quality model on MODEL's cross-validation predictions "
                             "against --dataset's labels; writes MODEL/qc.json, which medseg predict then uses."),
    dataset: Optional[Path] = typer.Option(None, "-d", "--dataset", help="With --fit: the raw dataset the model "
                                           "was trained on."),
    top: Optional[int] = typer.Option(None, "--top", help="List only the N most likely failures."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Also write the list (or the fit) as JSON."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUTPUT (default: refuse)."),
) -> None:
    """Label-free quality control: a predicted Dice per case from the prediction's own probabilities."""
    from medseg.config import write_json_atomic
    from medseg.errors import MedsegError
    from medseg.trust.qc import QC_FILE, fit_quality_model, review_list

    if output is not None and output.exists() and not overwrite:
        raise MedsegError("the output exists", path=output, fix="pass another -o or --overwrite")
    if top is not None and top < 1:
        raise MedsegError(f"--top {top} is not positive", fix="e.g. --top 10")
    if fit:
        if dataset is None:
            raise MedsegError("--fit needs the dataset the model was trained on", path=target,
                              fix="medseg qc MODEL --fit -d DATASET")
        if not (target / "model.json").is_file():
            raise MedsegError("model folder not found (no model.json)", path=target,
                              fix="pass the folder that medseg train wrote")
        quality, cases = fit_quality_model(target, dataset)
        spearman = "n/a" if quality.loo_spearman is None else f"{quality.loo_spearman:.3f}"
        typer.echo(f"quality control fitted on {quality.cases} cross-validation cases ({quality.fitted_on}): "
                   f"leave-one-out Spearman {spearman}, mean absolute error {quality.loo_mae:.3f}; "
                   f"wrote {target / QC_FILE}")
        if output is not None:
            write_json_atomic({"model": quality.to_dict(), "cases": cases}, output)
        return
    if dataset is not None:
        raise MedsegError("--dataset is for --fit", fix="medseg qc MODEL --fit -d DATASET, or medseg qc PREDICTIONS")
    if not target.is_dir():
        raise MedsegError("prediction folder not found", path=target, fix="pass the -o folder of medseg predict")
    rows = review_list(target)[:top]
    typer.echo(f"{'rank':>4}  {'case':<32} {'predicted Dice':>14} {'failure score':>13}")
    for rank, row in enumerate(rows, 1):
        typer.echo(f"{rank:>4}  {row['case']:<32} {row['predicted_dice']:>14.3f} {row['failure_score']:>13.3f}")
    if output is not None:
        write_json_atomic({"review_first": rows}, output)
