"""Dataset commands: convert, check, fingerprint, example-data. Heavy imports stay inside the functions."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def convert(
    source: Path = typer.Argument(..., help="Medical Segmentation Decathlon dataset folder (dataset.json + 4D images)."),
    destination: Path = typer.Argument(..., help="New folder for the nnU-Net v2 raw layout."),
    file_ending: str = typer.Option(".nii.gz", help="Suffix of the written files."),
) -> None:
    """Convert an MSD dataset to the nnU-Net v2 raw layout (one file per channel)."""
    from medseg.data.convert import msd_to_nnunet
    from medseg.output_paths import prepare_output_dir

    prepare_output_dir(destination, inputs=[source], must_not_exist=True)
    out = msd_to_nnunet(source, destination, file_ending=file_ending)
    typer.echo(f"wrote {out}")


def check(
    dataset: Path = typer.Argument(..., help="Dataset folder (nnU-Net v2 or MSD layout)."),
    tolerance: float = typer.Option(1e-4, help="Relative tolerance on spacing/origin/direction when comparing grids."),
    workers: Optional[int] = typer.Option(None, help="Worker processes (default: one per core)."),
) -> None:
    """Validate every case: files, channels, grids, label values, NaN/Inf. Exit 2 if any problem."""
    from medseg.data.check import check_dataset

    report = check_dataset(dataset, tolerance=tolerance, workers=workers)
    for problem in report.problems:
        typer.echo(str(problem))
    typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(code=2)


def fingerprint(
    dataset: Path = typer.Argument(..., help="Dataset folder (nnU-Net v2 or MSD layout)."),
    output: Path = typer.Option(Path("fingerprint.json"), "-o", "--output", help="Where to write the JSON."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing fingerprint file."),
    samples_per_case: int = typer.Option(10_000, help="Foreground voxels sampled per case for intensity statistics."),
    seed: int = typer.Option(0, help="Seed of the voxel sampling."),
    workers: Optional[int] = typer.Option(None, help="Worker processes (default: one per core)."),
) -> None:
    """Compute the dataset fingerprint (shapes, spacings, intensities, class frequencies) -> fingerprint.json."""
    from medseg.output_paths import prepare_output_file
    from medseg.planning import compute_fingerprint, write_fingerprint

    prepare_output_file(output, inputs=[dataset], overwrite=overwrite)
    result = compute_fingerprint(dataset, samples_per_case=samples_per_case, seed=seed, workers=workers)
    path = write_fingerprint(result, output)
    typer.echo(f"{result.num_cases} cases; median spacing {result.median_spacing}; anisotropy "
               f"{result.anisotropy:.2f}; class fractions {result.class_voxel_fraction}")
    typer.echo(f"wrote {path}")


def example_data(
    destination: Path = typer.Argument(..., help="New folder for the example dataset."),
    cases: int = typer.Option(8, help="Number of cases."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Write a small built-in 3D dataset (nnU-Net layout, anisotropic spacing), no download."""
    from medseg.synth.shapes import write_shapes_dataset

    out = write_shapes_dataset(destination, num_cases=cases, seed=seed)
    typer.echo(f"wrote {out}")


def demo(
    out: Path = typer.Option(Path("medseg_demo"), help="Folder for the demo's outputs (a previous demo is replaced)."),
    budget: str = typer.Option("90s", help="Training time budget."),
) -> None:
    """The main job on built-in data: dataset -> check -> plan -> train -> predict -> evaluate -> report."""
    from medseg.demo import run_demo
    from medseg.planning.budget import parse_duration

    result = run_demo(out, budget_seconds=parse_duration(budget), log=typer.echo)
    typer.echo(f"check        {result.check_summary}")
    typer.echo(f"trained      {result.steps} steps of the 2d configuration in the {budget} budget")
    typer.echo(f"held-out Dice {result.dice}")
    typer.echo(f"report       {result.report} (metrics in {result.folder / 'evaluation'}, pictures in "
               f"{result.folder / 'overlays'})")
