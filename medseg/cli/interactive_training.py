"""``medseg train-interactive``: one promptable model across several datasets. Heavy imports stay inside."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def checked_training_inputs(datasets: List[Path], output: Path, features: str, *, resume: bool,
                            existing: tuple[str, ...], what: str) -> list[int]:
    """Checks before a model-folder training run reads anything: ``--features`` as integers (returned), every
    dataset folder present, the output folder usable and, unless ``resume``, holding none of ``existing``."""
    from medseg.errors import MedsegError
    from medseg.output_paths import prepare_output_dir

    try:
        widths = [int(x) for x in features.split(",")]
    except ValueError:
        raise MedsegError(f"--features must be integers separated by commas, not {features!r}") from None
    for dataset in datasets:
        if not dataset.is_dir():
            raise MedsegError("dataset folder not found", path=dataset, fix="pass a folder with dataset.json")
    prepare_output_dir(output, inputs=datasets, overwrite=True)
    if not resume and any((output / name).exists() for name in existing):
        raise MedsegError(f"the folder already holds {what} model or training run", path=output,
                          fix="pass --resume to continue it, or choose another folder with -o")
    return widths


def train_interactive(
    datasets: List[Path] = typer.Argument(..., help="Dataset folders (nnU-Net v2 or MSD layout), 2D or 3D."),
    output: Path = typer.Option(Path("interactive_model"), "-o", "--output", help="Model folder to write."),
    budget: str = typer.Option("10m", help="Wall-clock training budget, e.g. 20m."),
    train_fraction: float = typer.Option(0.8, help="The first fraction of each dataset's sorted case ids trains; "
                                                   "the rest is held out (blocks, not random)."),
    grid: int = typer.Option(128, help="Side of the square model grid every slice is resized to."),
    features: str = typer.Option("8,16,32,64,128", help="Channels per U-Net level, comma-separated."),
    fusion: str = typer.Option("decoder", help="decoder (image embedding cached, prompts enter the decoder) or "
                                               "input (prompts as input channels)."),
    norm: str = typer.Option("instance", help="Normalisation layers: instance, batch or group."),
    batch_size: int = typer.Option(8, help="Slices per step."),
    learning_rate: float = typer.Option(2e-3, help="AdamW learning rate at the start (poly decay to 0)."),
    slice_step: int = typer.Option(2, help="3D volumes: every N-th axial slice that holds the object."),
    threads: Optional[int] = typer.Option(None, help="Torch threads on a CPU (default: all cores)."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    seed: int = typer.Option(0, help="Random seed."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUTPUT/fold_all/checkpoint.pt."),
) -> None:
    """Train a promptable (clicks, boxes, scribbles) model with simulated interactions under a time budget."""
    from medseg.interactive.training import interactive_train_config, train_interactive as run
    from medseg.nets.promptable_unet import PromptableConfig
    from medseg.planning.budget import parse_duration

    widths = checked_training_inputs(datasets, output, features, resume=resume,
                                     existing=("model.json", "fold_all", "interactive.json"), what="an interactive")
    config = interactive_train_config(budget_seconds=parse_duration(budget), batch_size=batch_size,
                                      learning_rate=learning_rate, seed=seed, device=device, threads=threads)
    network = PromptableConfig(features=widths, fusion=fusion, norm=norm, grid=[grid, grid])
    folder = run(datasets, output, config=config, network_config=network, train_fraction=train_fraction,
                 grid=(grid, grid), slice_step=slice_step, resume=resume)
    typer.echo(f"wrote {folder}")
