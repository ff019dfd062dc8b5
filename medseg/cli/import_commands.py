"""``medseg import ...``: model folders of other tools as medseg model folders. ``nnunet`` imports a trained
nnU-Net v2 model (``medseg.importers.nnunet``)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def nnunet(
    results_folder: Path = typer.Argument(..., help="nnU-Net v2 model folder: nnUNet_results/DatasetXXX_Name/"
                                                    "TRAINER__PLANS__CONFIGURATION."),
    more_folds: Optional[List[str]] = typer.Argument(None, hidden=True, help="The rest of --folds 0 1 2."),
    output: Path = typer.Option(..., "-o", "--output", help="The medseg model folder to write."),
    folds: Optional[List[str]] = typer.Option(None, "--folds", "-f", help="Folds to import: --folds 0 1, -f 0 -f 1, "
                                              "-f 0,1 or -f all (default: every fold_* with the checkpoint)."),
    checkpoint: str = typer.Option("checkpoint_final.pth", "--checkpoint", help="Checkpoint file name in each fold."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier import in OUTPUT."),
) -> None:
    """Import a trained nnU-Net v2 model, so that medseg predict -m OUTPUT uses it without retraining."""
    from medseg.errors import MedsegError
    from medseg.importers import import_nnunet

    if more_folds and not folds:
        raise MedsegError(f"unexpected argument(s) {' '.join(more_folds)}",
                          fix="give one RESULTS_FOLDER; name folds with --folds 0 1")
    chosen = [part for item in [*(folds or []), *(more_folds or [])] for part in item.replace(",", " ").split()]
    report = import_nnunet(results_folder, output, folds=chosen or None, checkpoint=checkpoint, overwrite=overwrite)
    typer.echo(f"{report.output}: {report.network} ({report.configuration}), folds {', '.join(report.folds)}, "
               f"labels {report.label_values}")
    for note in report.notes:
        typer.echo(f"note: {note}")
