"""The ``calibrate`` command: fit a model folder's probability calibration (heavy imports inside)."""

from __future__ import annotations

from pathlib import Path

import typer


def calibrate(
    model: Path = typer.Argument(..., help="Model folder that medseg train wrote, with cross-validation folds."),
    dataset: Path = typer.Option(..., "-d", "--dataset", help="The raw dataset the model was trained on (its "
                                 "labelsTr are the references of the cross-validation predictions)."),
    method: str = typer.Option("temperature", "--method", help="temperature (one T, the labels unchanged) or "
                               "vector (a scale and a bias per class)."),
    max_voxels: int = typer.Option(2_000_000, "--max-voxels", help="Voxels sampled from the cross-validation "
                                   "probabilities, the same number per case."),
    seed: int = typer.Option(0, help="Seed of the voxel sample."),
) -> None:
    """Fit temperature or vector scaling on the cross-validation predictions; MODEL/calibration.json, which
    medseg predict then applies."""
    from medseg.errors import MedsegError
    from medseg.trust.calibration import calibrate_model

    if not (model / "model.json").is_file():
        raise MedsegError("model folder not found (no model.json)", path=model,
                          fix="pass the folder that medseg train wrote")
    spec = calibrate_model(model, dataset, method=method, max_voxels=max_voxels, seed=seed)
    before, after = spec.figures["before"], spec.figures["after"]
    fitted = f"T = {spec.temperature:.4g}" if spec.temperature is not None else "per-class scale and bias"
    typer.echo(f"{spec.method} scaling ({fitted}) on {spec.fitted_on['voxels']} voxels of "
               f"{spec.fitted_on['cases']} cross-validation cases: NLL {before['nll']:.4g} -> {after['nll']:.4g}, "
               f"ECE {before['ece']:.4g} -> {after['ece']:.4g}; wrote {model / 'calibration.json'}")
