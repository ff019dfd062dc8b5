"""Pipeline commands: plan, preprocess. Heavy imports stay inside the functions."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def plan(
    dataset: Path = typer.Argument(..., help="Dataset folder (nnU-Net v2 or MSD layout)."),
    output: Path = typer.Option(Path("plans.json"), "-o", "--output", help="Where to write plans.json."),
    device: str = typer.Option("cpu", help="cpu or cuda: the device the plan is fitted to."),
    budget: Optional[str] = typer.Option(None, help="Training time per configuration, e.g. 30m, 2h (default: none, "
                                                    "nnU-Net's fixed schedule)."),
    memory: Optional[str] = typer.Option(None, help="Memory for activations, e.g. 8GB (default: GPU memory, or "
                                                    "half the RAM up to 8 GB on a CPU)."),
    fingerprint: Optional[Path] = typer.Option(None, help="A fingerprint.json to reuse (default: compute it)."),
    min_iterations: int = typer.Option(1000, help="Training steps the budget should allow; the network and patch "
                                                  "shrink until it does."),
    set_: List[str] = typer.Option([], "--set", help="Override a field: [CONFIG.]FIELD=JSON, repeatable."),
    flops: Optional[float] = typer.Option(None, help="Skip calibration: the device's training FLOP/s."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing plans file."),
    instances: Optional[bool] = typer.Option(None, "--instances/--no-instances", help="Plan the instance "
                                             "configuration (a distance-map head, watershed into objects); default: "
                                             "when the dataset has instancesTr/, else the connected components of "
                                             "the labels are the objects."),
) -> None:
    """Plan the configurations (2d, 2.5d, 3d_fullres, 3d_lowres, cascade, instance) fitted to the device and time
    budget."""
    from medseg.output_paths import prepare_output_file
    from medseg.planning.service import make_plan

    prepare_output_file(output, inputs=[dataset], overwrite=overwrite)
    result = make_plan(dataset, device=device, budget=budget, memory=memory, fingerprint_path=fingerprint,
                       min_iterations=min_iterations, overrides=set_, flops_per_second=flops, instances=instances)
    for config in result.configurations.values():
        typer.echo(f"{config.name:20s} patch {config.patch_size} batch {config.batch_size} spacing "
                   f"{[round(s, 3) for s in config.target_spacing]} features {config.network['features_per_stage']} "
                   f"~{config.estimated_step_seconds:.2f} s/step -> {config.num_iterations} steps")
    from medseg.config import write_json_atomic

    typer.echo(f"wrote {write_json_atomic(result.to_dict(), output)}")


def preprocess(
    dataset: Path = typer.Argument(..., help="Dataset folder (nnU-Net v2 or MSD layout)."),
    configuration: str = typer.Option(..., "-c", "--configuration", help="Configuration from the plan, e.g. 2d."),
    plans: Path = typer.Option(Path("plans.json"), "-p", "--plans", help="plans.json from medseg plan."),
    output: Path = typer.Option(Path("preprocessed"), "-o", "--output", help="Cache folder."),
    workers: Optional[int] = typer.Option(None, help="Worker processes (default: one per core)."),
    previous_stage: Optional[Path] = typer.Option(None, "--previous-stage", help="For 3d_cascade_fullres: the "
                                                  "3d_lowres model folder whose validation predictions join the "
                                                  "input."),
) -> None:
    """Crop, normalise and resample every case into a memory-mappable cache (resumes where it stopped)."""
    import resource

    from medseg.config import Plan, read_json
    from medseg.data.layout import open_dataset
    from medseg.errors import MedsegError
    from medseg.output_paths import prepare_output_dir
    from medseg.preprocess.pipeline import preprocess_dataset
    from medseg.training.cascade import first_stage_predictions

    prepare_output_dir(output, inputs=[dataset], overwrite=True)  # the cache resumes: existing cases are kept
    plan = Plan.from_dict(read_json(plans), path=plans)
    config = plan.configurations.get(configuration)
    first_stage = None
    if config is not None and config.previous_stage:
        data = open_dataset(dataset)
        first_stage = first_stage_predictions(previous_stage, config, [c.case_id for c in data.cases],
                                              data.spec.predicted_label_values)
    elif previous_stage is not None:
        raise MedsegError(f"{configuration} has no previous stage", path=previous_stage,
                          fix="--previous-stage is for a cascade configuration (3d_cascade_fullres)")
    counts = preprocess_dataset(dataset, plan, configuration, output, workers=workers, plans_path=plans,
                                previous_stage=first_stage)
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    typer.echo(f"{counts['done']} case(s) preprocessed, {counts['skipped']} already there; peak RSS of one "
               f"process {peak / 1024:.0f} MB; cache {output / configuration}")


def train(
    context: typer.Context,
    dataset: Path = typer.Argument(..., help="Dataset folder (nnU-Net v2 or MSD layout)."),
    configuration: str = typer.Option(..., "-c", "--configuration", help="Configuration from the plan, e.g. 2d."),
    fold: str = typer.Option("0", "-f", "--fold", help="Fold 0..4, or all."),
    output: Path = typer.Option(Path("model"), "-o", "--output", help="Model folder (shared by folds)."),
    budget: Optional[str] = typer.Option(None, help="Wall-clock budget of this fold, e.g. 20m (default: the plan's)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the fold's last checkpoint."),
    plans: Optional[Path] = typer.Option(None, "-p", "--plans", help="plans.json (default: MODEL/plans.json, or "
                                                                     "plan now for the budget)."),
    preprocessed: Optional[Path] = typer.Option(None, help="Cache folder (default: MODEL/preprocessed)."),
    split: str = typer.Option("random", help="Cross-validation split: random, or blocks (video frames)."),
    groups: Optional[Path] = typer.Option(None, help="JSON {case: group}: cases of a group share a fold."),
    optimizer: str = typer.Option("sgd", help="sgd (Nesterov, momentum 0.99) or adamw."),
    workers: int = typer.Option(1, help="Data-loading worker processes."),
    seed: int = typer.Option(0, help="Random seed."),
    max_iterations: Optional[int] = typer.Option(None, help="Stop after this many steps (default: the plan's)."),
    iterations_per_epoch: int = typer.Option(50, help="Training steps between validations and checkpoints."),
    validation: bool = typer.Option(True, help="Predict the fold's validation cases in full after training."),
    network: Optional[str] = typer.Option(None, help="A network of `medseg models` instead of the planned U-Net "
                                                     "(fitted to the plan's patch; its memory and step time are "
                                                     "measured to refit batch size and steps)."),
    set_: List[str] = typer.Option([], "--set", help="A network option: net.KEY=JSON, repeatable (e.g. "
                                                     "--set net.feature_size=24)."),
    loss: Optional[str] = typer.Option(None, help="A loss of the registry (medseg.losses.list_losses()) instead "
                                                  "of nnU-Net's Dice + CE."),
    previous_stage: Optional[Path] = typer.Option(None, "--previous-stage", help="For 3d_cascade_fullres: the "
                                                  "3d_lowres model folder, all of whose folds are trained (their "
                                                  "validation predictions join the input)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: the device the plan was "
                                         "made for, medseg plan --device)."),
    precision: str = typer.Option("auto", "--precision", help="float32, bfloat16 (autocast, float32 master "
                                  "weights) or auto: bfloat16 where the device has it natively and the plan's "
                                  "calibration timed it faster (CUDA: bfloat16), else float32."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads on a CPU (default: the fastest "
                                          "count, measured on the run's own steps and re-measured as load "
                                          "changes)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from this model folder's weights (medseg "
                                        "pretrain, or a trained model) instead of random ones; without a plan of "
                                        "this run its plan is used, so the network fits. The head is new."),
    unlabelled: List[Path] = typer.Option([], "--unlabelled", help="Unlabelled images for semi-supervised "
                                          "training: a folder of images or a dataset folder (repeatable)."),
    semi: Optional[str] = typer.Option(None, "--semi", help="mean-teacher (default with --unlabelled) or fixmatch: "
                                       "the consistency term on the unlabelled images."),
    nproc: Optional[int] = typer.Option(None, "--nproc", help="Train data-parallel in N processes on this machine "
                                        "(runs torchrun --standalone --nproc-per-node N -m medseg train ...; "
                                        "each process draws its own batches of the plan's size)."),
) -> None:
    """Train one fold within a wall-clock budget (checkpoints every epoch; --resume continues).

    Data-parallel on many processes or machines: ``torchrun --nproc-per-node N [--nnodes M --rdzv-backend c10d
    --rdzv-endpoint HOST:PORT] -m medseg train ...``, or ``--nproc N`` on one machine; after a kill of any rank,
    run the same command with --resume."""
    if nproc is not None:
        from medseg.cli.torchrun_launch import relaunch

        raise typer.Exit(relaunch(context, nproc))
    from medseg.planning.budget import parse_duration
    from medseg.planning.overrides import parse_network_overrides
    from medseg.training.service import train_fold

    result = train_fold(dataset, configuration, fold, model_dir=output, plans=plans, preprocessed=preprocessed,
                        budget_seconds=parse_duration(budget) if budget else None, resume=resume, split_mode=split,
                        groups_file=groups, train_config={"optimizer": optimizer, "num_workers": workers,
                                                          "seed": seed, "max_iterations": max_iterations,
                                                          "iterations_per_epoch": iterations_per_epoch, "loss": loss,
                                                          "device": device, "precision": precision,
                                                          "threads": threads},
                        network=network, network_options=parse_network_overrides(set_) or None,
                        validate=validation, previous_stage=previous_stage, init=init,
                        unlabelled=unlabelled or None, semi=semi)
    last = result.state.history[-1] if result.state.history else {}
    if result.rank != 0:
        return  # data-parallel: rank 0 reports
    typer.echo(f"{'resumed and ' if result.resumed else ''}trained {result.state.iteration} steps in "
               f"{result.state.elapsed:.0f} s; last validation pseudo-Dice {last.get('val_dice')}; "
               f"model {result.fold_dir}")
    if result.validation_dice is not None:
        typer.echo(f"validation cases, full-image Dice per label: {result.validation_dice}")
