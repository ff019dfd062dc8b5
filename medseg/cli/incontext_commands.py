"""``medseg incontext`` and ``medseg train-incontext``: in-context segmentation from a support set, and its
meta-training. Heavy imports stay inside the functions."""

from __future__ import annotations

from pathlib import Path

import typer


def incontext(
    support: Path = typer.Option(..., "--support", "-s", help="Support folder: imagesTr/ + labelsTr/ (nnU-Net "
                                 "layout) or images/ + masks/, same names."),
    target: Path = typer.Option(..., "--target", "-t", help="Image to segment (2D, or 3D slice by slice)."),
    output: Path = typer.Option(..., "-o", "--output", help="New folder for mask, candidates and spread."),
    k: int | None = typer.Option(None, "-k", help="Support examples (2D) or slices per target slice (3D) to "
                                    "use (default: all; 3D at most 64)."),
    candidates: int = typer.Option(1, "--candidates", help="Masks to draw (a stochastic model); writes each and "
                                   "their pixel-wise spread."),
    model: Path | None = typer.Option(None, "--model", "-m", help="In-context model folder (default: the "
                                         "shipped model)."),
    label: int | None = typer.Option(None, "--label", help="Label value of the structure in the support masks "
                                        "(default: every value > 0)."),
    nearest: bool = typer.Option(False, "--nearest", help="3D: use the support slices nearest in relative "
                                 "position to each target slice."),
    channel: int | None = typer.Option(None, "--channel", help="Image channel the model reads (default: the "
                                          "mean of RGB, else the first)."),
    seed: int = typer.Option(0, help="Seed of the candidates' noise."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
) -> None:
    """Segment a structure in a new image from a few labelled examples, with no training."""
    from medseg.errors import MedsegError
    from medseg.incontext.outputs import target_suffix, write_prediction
    from medseg.incontext.session import InContextSession, check_support_fits
    from medseg.incontext.support import SupportSet
    from medseg.io import read_image
    from medseg.output_paths import prepare_output_dir

    prepare_output_dir(output, inputs=[support, target], must_not_exist=True)
    session = InContextSession(model, device=device)  # a missing model is an error before any reading
    support_set = SupportSet.from_folder(support, label=label)
    image = read_image(target)
    check_support_fits(support_set, image.ndim, path=support)
    try:
        prediction = session.predict(image, support_set, k=k, candidates=candidates, nearest=nearest, seed=seed,
                                     channel=channel)
    except MedsegError as error:
        if error.path is None:
            raise MedsegError(str(error).split(" (fix: ")[0], path=target, fix=error.fix) from None
        raise
    info = {"target": str(target), "support": str(support), "support_examples": len(support_set),
            "k": k, "nearest": nearest, "model": str(model) if model else "shipped"}
    folder = write_prediction(prediction, image, output, suffix=target_suffix(target), info=info)
    typer.echo(f"wrote {folder}")


def train_incontext(
    datasets: list[Path] = typer.Argument(..., help="Dataset folders (nnU-Net v2 or MSD layout), 2D or 3D."),
    output: Path = typer.Option(Path("incontext_model"), "-o", "--output", help="Model folder to write."),
    budget: str = typer.Option("10m", help="Wall-clock training budget, e.g. 2h."),
    exclude: list[str] | None = typer.Option(None, "--exclude", help="Dataset (folder name) to leave out, for "
                                                "evaluation on it; repeat for more."),
    train_fraction: float = typer.Option(0.8, help="The first fraction of each dataset's sorted case ids trains; "
                                                   "the rest is held out (blocks, not random)."),
    grid: int = typer.Option(128, help="Side of the square model grid."),
    features: str = typer.Option("16,32,64,128", help="Channels per U-Net level, comma-separated."),
    stochastic: bool = typer.Option(False, "--stochastic", help="Train the stochastic (Tyche) network: several "
                                    "candidates, best-candidate loss."),
    candidates: int = typer.Option(3, help="--stochastic: candidates per target in training."),
    batch_size: int = typer.Option(4, help="Tasks per step."),
    max_support: int = typer.Option(8, help="Largest support size drawn in training."),
    synthetic_fraction: float = typer.Option(0.5, help="Fraction of synthetic tasks."),
    learning_rate: float = typer.Option(1e-3, help="AdamW learning rate at the start (poly decay to 0)."),
    validate_every: int = typer.Option(100, help="Steps between validations (and checkpoints)."),
    slices_per_axis: int = typer.Option(4, help="3D volumes: slices per axis, object and case."),
    threads: int | None = typer.Option(None, help="Torch threads on a CPU (default: all cores)."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    seed: int = typer.Option(0, help="Random seed."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUTPUT/fold_all/checkpoint.pt."),
) -> None:
    """Meta-train an in-context model on the datasets' tasks and synthetic tasks under a time budget."""
    from medseg.cli.interactive_training import checked_training_inputs
    from medseg.errors import MedsegError
    from medseg.incontext.training import incontext_train_config
    from medseg.incontext.training import train_incontext as run
    from medseg.nets.incontext_unet import InContextConfig
    from medseg.planning.budget import parse_duration

    widths = checked_training_inputs(datasets, output, features, resume=resume, existing=("model.json", "fold_all"),
                                     what="an in-context")
    if grid % 2 ** (len(widths) - 1):
        raise MedsegError(f"--grid {grid} is not divisible by {2 ** (len(widths) - 1)} ({len(widths)} levels)",
                          fix="use a grid that is a multiple of 2 ** (levels - 1), e.g. 128")
    config = incontext_train_config(budget_seconds=parse_duration(budget), batch_size=batch_size,
                                    max_support=max_support, synthetic_fraction=synthetic_fraction,
                                    candidates=candidates, learning_rate=learning_rate, seed=seed, device=device,
                                    threads=threads, validate_every=validate_every)
    network = InContextConfig(features=widths, stochastic=stochastic, grid=[grid, grid])
    folder = run(datasets, output, exclude=exclude or [], config=config, network_config=network,
                 train_fraction=train_fraction, slices_per_axis=slices_per_axis, resume=resume)
    typer.echo(f"wrote {folder}")
