"""``medseg import ...``: model folders of other tools as medseg model folders. ``nnunet`` imports a trained
nnU-Net v2 model (``medseg.importers.nnunet``)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def nnunet(
    results_folder: Path = typer.Argument(..., help="nnU-Net v2 model folder: nnUNet_results/DatasetXXX_Name/"
                                                    "TRAINER__PLANS__CONFIGURATION."),
    output: Path = typer.Option(..., "-o", "--output", help="The medseg model folder to write."),
    folds: Optional[List[str]] = typer.Option(None, "--folds", "-f", help="Folds to import, e.g. --folds 0 --folds 1, "
                                                                          "or all (default: every fold_* there)."),
    checkpoint: str = typer.Option("checkpoint_final.pth", "--checkpoint", help="Checkpoint file name in each fold."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier import in OUTPUT."),
) -> None:
    """Import a trained nnU-Net v2 model, so that medseg predict -m OUTPUT uses it without retraining."""
    from medseg.importers import import_nnunet

    chosen = [part for item in folds or [] for part in item.replace(",", " ").split()]
    report = import_nnunet(results_folder, output, folds=chosen or None, checkpoint=checkpoint, overwrite=overwrite)
    typer.echo(f"{report.output}: {report.network} ({report.configuration}), folds {', '.join(report.folds)}, "
               f"labels {report.label_values}")
    for note in report.notes:
        typer.echo(f"note: {note}")
