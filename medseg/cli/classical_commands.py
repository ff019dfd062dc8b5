"""The ``classical`` command: a classical method fitted on a dataset's training cases segments images
(``medseg.classical``; heavy imports inside the function)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

METHOD_NAMES = "otsu, multi-otsu, region-growing, watershed, random-walker, chan-vese, kmeans, gmm, graph-cut"


def classical(
    dataset: Path = typer.Argument(..., help="A raw dataset: the method's parameters and the map from its regions "
                                   "to the labels are chosen on its labelled training cases."),
    method: str = typer.Option(..., "--method", help=f"One of {METHOD_NAMES}."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the label maps and classical.json."),
    images: Optional[Path] = typer.Option(None, "-i", "--input", help="Images to segment: a file, a folder of "
                                          "images or a dataset (default: the dataset's imagesTs, else imagesTr)."),
    tune_cases: int = typer.Option(8, "--tune-cases", help="Training cases the parameter search scores (evenly "
                                   "spaced over the sorted ids)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
) -> None:
    """Classical segmentation as a baseline: fit the method on the training cases, then segment the images."""
    from medseg.classical import MODEL_FILE, segment_with_classical

    model, written = segment_with_classical(dataset, method, output, images=images, tune_cases=tune_cases,
                                            overwrite=overwrite, log=typer.echo)
    typer.echo(f"wrote {len(written)} label maps and {Path(output) / MODEL_FILE}")
