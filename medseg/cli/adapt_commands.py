"""``medseg adapt``: parameter-efficient fine-tuning of a model folder on a few labelled cases
(``medseg.adapt.finetune``); ``medseg model merge``: an adapted folder of deltas -> full weights
(``medseg.adapt.merge``); ``medseg pretrain``: self-supervised pretraining on unlabelled images
(``medseg.adapt.pretrain``)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

METHODS_HELP = "full, decoder, linear-probe, bitfit, affine-norm, lora, adapter or spatial-adapter."


def adapt(
    model: Path = typer.Argument(..., help="The base model folder (medseg train, or medseg pretrain)."),
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


def pretrain(
    sources: List[Path] = typer.Argument(..., help="Dataset folders (all their images; labels ignored) or folders "
                                                   "of images; the first one's plan is used unless --plans."),
    configuration: str = typer.Option(..., "-c", "--configuration", help="The plan configuration, e.g. 2d."),
    output: Path = typer.Option(..., "-o", "--output", help="The pretrained model folder."),
    method: str = typer.Option("mae", "--method", help="mae: masked-image modelling (blocks of the network's "
                                                        "stride masked, the image reconstructed)."),
    budget: str = typer.Option("1h", help="Wall-clock budget, e.g. 1h."),
    plans: Optional[Path] = typer.Option(None, "-p", "--plans", help="plans.json to pretrain with (default: a plan "
                                                                    "of the first dataset for the budget)."),
    mask_ratio: float = typer.Option(0.6, help="Share of the blocks masked."),
    block: Optional[str] = typer.Option(None, "--block", help="The masked block's edge per axis, e.g. 16x16 or "
                                                               "4x16x16 (default: the network's total stride, "
                                                               "at most half the patch)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint."),
    seed: int = typer.Option(0, help="Random seed."),
    workers: int = typer.Option(1, help="Data-loading worker processes."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads on a CPU (default: measured)."),
    max_iterations: Optional[int] = typer.Option(None, help="Stop after this many steps (default: the budget)."),
    iterations_per_epoch: int = typer.Option(50, help="Training steps between validations and checkpoints."),
) -> None:
    """Pretrain a plan's network on unlabelled images (no labels needed); fine-tune the result with
    medseg train DATASET -c C --init OUTPUT, or medseg adapt OUTPUT DATASET."""
    from medseg.adapt.pretrain import pretrain as run_pretraining
    from medseg.cli.size_text import sizes_from_text
    from medseg.planning.budget import parse_duration

    result = run_pretraining(sources, output, configuration=configuration, method=method, plans=plans,
                             budget_seconds=parse_duration(budget), mask_ratio=mask_ratio, resume=resume,
                             block=sizes_from_text(block, "--block", shape="edges joined by x",
                                                   example="--block 16x16 or --block 4x16x16") if block else None,
                             train_options={"seed": seed, "num_workers": workers, "threads": threads,
                                            "max_iterations": max_iterations,
                                            "iterations_per_epoch": iterations_per_epoch})
    typer.echo(f"{'resumed and ' if result.resumed else ''}pretrained {result.steps} steps in {result.seconds:.0f} s "
               f"on {result.images} image(s); validation masked MSE {result.first_val} (first epoch) -> "
               f"{result.last_val} (last); model {result.model_dir}")
