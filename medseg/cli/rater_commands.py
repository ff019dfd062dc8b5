"""The ``raters`` commands: several raters' label maps per case (``labelsTr/<case>_r<K>``): simulate them from a
dataset with one label map per case, or write their consensus (``medseg.data.raters``; heavy imports inside)."""

from __future__ import annotations

from pathlib import Path

import typer


def simulate(
    dataset: Path = typer.Argument(..., help="A dataset folder with one label map per case (nnU-Net v2 layout)."),
    output: Path = typer.Option(..., "-o", "--output", help="The new dataset folder (images linked, not copied)."),
    raters: int = typer.Option(4, "--raters", help="Raters per case."),
    bias: float = typer.Option(2.0, "--bias", help="Largest systematic boundary offset, mm (tight -bias .. "
                               "generous +bias)."),
    noise: float = typer.Option(1.5, "--noise", help="Each rater's smooth boundary jitter, standard deviation mm."),
    smoothness: float = typer.Option(6.0, "--smoothness", help="The jitter's correlation length, mm."),
    seed: int = typer.Option(0, "--seed", help="Seed of every random draw."),
) -> None:
    """Simulated raters of every case (boundary offset + smooth jitter of the real label, documented in
    medseg.data.raters) and their majority vote as the case's label."""
    from medseg.data.raters import RaterModel, simulate_rater_dataset

    simulate_rater_dataset(dataset, output, num_raters=raters, model=RaterModel(bias, noise, smoothness), seed=seed,
                           log=typer.echo)


def consensus(
    dataset: Path = typer.Argument(..., help="A dataset folder whose labelsTr/ holds <case>_r<K> files."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Rewrite existing labelsTr/<case> files too."),
) -> None:
    """Write labelsTr/<case> as the majority vote of the case's raters, for every case that has none."""
    from medseg.data.raters import write_consensus

    write_consensus(dataset, overwrite=overwrite, log=typer.echo)
