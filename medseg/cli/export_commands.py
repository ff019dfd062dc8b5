"""``medseg export``: a trained model folder as ONNX networks plus their pre/post-processing
(``medseg.export``)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def export(
    model: Path = typer.Argument(..., help="The model folder that medseg train (or medseg import) wrote."),
    output: Path = typer.Option(..., "-o", "--output", help="The folder to write: fold_K.onnx per fold and "
                                "pipeline.json."),
    dynamic: bool = typer.Option(False, "--dynamic", help="Dynamic batch size (and spatial size where the network "
                                 "allows); default: fixed (--batch, C, *patch)."),
    batch: int = typer.Option(1, "--batch", help="The fixed batch size of the networks (without --dynamic)."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (default: the exporter's)."),
    folds: Optional[List[str]] = typer.Option(None, "-f", "--folds", help="Folds to export, e.g. -f 0 -f 1 or "
                                              "-f 0,1 (default: every fold with weights)."),
    tolerance: float = typer.Option(1e-3, "--tolerance", help="Largest allowed |onnxruntime - torch| logit "
                                    "difference at export, relative to max(1, largest |logit|)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier export in OUTPUT."),
) -> None:
    """Export a model's networks as ONNX (checked against torch) for medseg predict --engine onnxruntime."""
    from medseg.export import export_model

    chosen = [part for item in folds or [] for part in item.replace(",", " ").split()]
    report = export_model(model, output, dynamic=dynamic, opset=opset, batch=batch, folds=chosen or None,
                          tolerance=tolerance, overwrite=overwrite)
    shape = "dynamic batch" + (" and spatial size" if report.dynamic_spatial else "") if report.batch is None \
        else f"batch {report.batch}"
    for fold in report.folds:
        typer.echo(f"fold {fold.fold}: {fold.file} (max |onnxruntime - torch| logit difference {fold.max_abs_diff:.2e})")
    typer.echo(f"wrote {report.output} ({report.configuration}, opset {report.opset}, {shape})")
    for note in report.notes:
        typer.echo(f"note: {note}")
