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
    segment: list[str] = typer.Option([], "--segment", help="GEN=OUT: generation label GEN shapes the image but is "
                                      "written as label OUT (e.g. --segment 5=0 for a brain label that only adds "
                                      "contrast); repeatable."),
    blank: list[int] = typer.Option([], "--blank", help="Generation label whose voxels are 0 in the image (e.g. "
                                    "--blank 0 for skull-stripped data); repeatable."),
) -> None:
    """Synthetic images from label maps (random deformation, a Gaussian per label, bias field, blur, lower
    resolution, noise, gamma): a dataset to train contrast-agnostic models on."""
    from medseg.synth.synthseg import synth_dataset

    from medseg.errors import MedsegError

    mapping = {}
    for item in segment:
        old, sep, new = item.partition("=")
        if not sep or not old.strip().isdigit() or not new.strip().isdigit():
            raise MedsegError(f"--segment {item!r} is not GEN=OUT", fix="write label values, e.g. --segment 5=0")
        mapping[int(old)] = int(new)
    synth_dataset(labels, output, count=count, seed=seed, log=typer.echo, segment=mapping, blank=blank)
