"""The ``synth`` command: SynthSeg-style synthetic training images from label maps (``medseg.synth.synthseg``;
heavy imports inside the function)."""

from __future__ import annotations

from pathlib import Path

import typer


def synth(
    labels: Path = typer.Argument(..., help="A dataset folder (its labelsTr/) or a folder of label maps."),
    output: Path = typer.Option(..., "-o", "--output", help="The new dataset folder (nnU-Net v2 layout)."),
    count: int = typer.Option(200, "--n", help="Synthetic cases to write (the label maps are cycled)."),
    seed: int = typer.Option(0, "--seed", help="Seed of every random draw."),
) -> None:
    """Synthetic images from label maps (random deformation, a Gaussian per label, bias field, blur, lower
    resolution, noise, gamma): a dataset to train contrast-agnostic models on."""
    from medseg.synth.synthseg import synth_dataset

    synth_dataset(labels, output, count=count, seed=seed, log=typer.echo)
