"""``medseg adapt``: parameter-efficient fine-tuning of a model folder on a few labelled cases
(``medseg.adapt.finetune``); ``medseg model merge``: an adapted folder of deltas -> full weights
(``medseg.adapt.merge``)."""

from __future__ import annotations

from pathlib import Path

import typer

METHODS_HELP = "full, decoder, linear-probe, bitfit, affine-norm, lora, adapter or spatial-adapter."


def adapt(
    model: Path = typer.Argument(..., help="The base model folder (medseg train)."),
    dataset: Path = typer.Argument(..., help="The target dataset; the shots are drawn from its training cases."),
    method: str = typer.Option(..., "--method", help=f"What is trained: {METHODS_HELP}"),
    shots: int = typer.Option(..., "--shots", help="Labelled training cases drawn from DATASET."),
    output: Path = typer.Option(..., "-o", "--output", help="The new model folder."),
    seed: int = typer.Option(0, help="Seed of the draw of the shots and of training."),
    budget: str = typer.Option("10m", help="Wall-clock training budget, e.g. 10m."),
    base_fold: str | None = typer.Option(None, help="The base model's fold (default: all, else the first)."),
    rank: int = typer.Option(4, help="LoRA rank."),
    alpha: float = typer.Option(8.0, help="LoRA scale numerator (the update is alpha / rank * B A)."),
    reduction: int = typer.Option(4, help="Adapter bottleneck: channels // reduction wide."),
    spatial_kernel: int = typer.Option(3, help="Depthwise kernel of a spatial adapter."),
    optimizer: str = typer.Option("sgd", help="sgd (Nesterov, momentum 0.99) or adamw."),
    learning_rate: float | None = typer.Option(None, help="Initial learning rate (default: 0.01 sgd, 0.001 adamw)."),
    max_iterations: int | None = typer.Option(None, help="Stop after this many steps (default: the budget ends it)."),
    iterations_per_epoch: int = typer.Option(50, help="Training steps between validations."),
    workers: int = typer.Option(1, help="Data-loading worker processes."),
    merge: bool = typer.Option(False, "--merge", help="Write full weights (no base needed to load) instead of deltas."),
) -> None:
    """Fine-tune MODEL on SHOTS cases of DATASET with one method; the new folder holds only the trained deltas
    and a reference to MODEL (path + sha256), or with --merge the full weights. Prints the parameter counts."""
    from medseg.adapt.finetune import adapt_model
    from medseg.output_paths import prepare_output_dir
    from medseg.planning.budget import parse_duration

    if merge:
        prepare_output_dir(output, inputs=[dataset, model], must_not_exist=True)
    target = output.with_name(f".{output.name}.deltas") if merge else output
    result = adapt_model(model, dataset, method=method, shots=shots, output=target, seed=seed,
                         budget_seconds=parse_duration(budget), fold=base_fold,
                         peft_options={"rank": rank, "alpha": alpha, "reduction": reduction,
                                       "spatial_kernel": spatial_kernel},
                         train_options={"optimizer": optimizer, "learning_rate": learning_rate,
                                        "max_iterations": max_iterations, "num_workers": workers,
                                        "iterations_per_epoch": iterations_per_epoch})
    counts = result.counts
    typer.echo(f"{method}: {counts.trainable:,} trainable and {counts.frozen:,} frozen parameters "
               f"({100 * counts.fraction:.2f} % trained){'; new head' if result.new_head else ''}"
               f"{'; new first convolution' if result.new_stem else ''}")
    typer.echo(f"trained {result.steps} steps in {result.seconds:.0f} s on {len(result.shots)} shot(s): "
               f"{', '.join(result.shots)}")
    if merge:
        import shutil

        from medseg.adapt.merge import merge_adapted

        try:
            merge_adapted(target, output)
        finally:
            shutil.rmtree(target, ignore_errors=True)
    typer.echo(f"model {output}{' (merged: full weights)' if merge else ' (deltas; needs ' + str(model) + ')'}")


def merge(
    adapted: Path = typer.Argument(..., help="A folder of medseg adapt (deltas + base reference)."),
    output: Path = typer.Option(..., "-o", "--output", help="The new, self-contained model folder."),
) -> None:
    """Merge an adapted folder's deltas into its base: a model folder with full weights (LoRA folded in)."""
    from medseg.adapt.merge import merge_adapted

    typer.echo(f"merged {adapted} into {merge_adapted(adapted, output)}")
