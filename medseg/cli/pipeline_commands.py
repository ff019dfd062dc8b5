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
) -> None:
    """Plan the configurations (2d, 3d_fullres, 3d_lowres, cascade) fitted to the device and time budget."""
    from medseg.planning.service import make_plan

    result = make_plan(dataset, device=device, budget=budget, memory=memory, fingerprint_path=fingerprint,
                       min_iterations=min_iterations, overrides=set_, flops_per_second=flops)
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
) -> None:
    """Crop, normalise and resample every case into a memory-mappable cache (resumes where it stopped)."""
    import resource

    from medseg.config import Plan, read_json
    from medseg.preprocess.pipeline import preprocess_dataset

    counts = preprocess_dataset(dataset, Plan.from_dict(read_json(plans)), configuration, output, workers=workers)
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    typer.echo(f"{counts['done']} case(s) preprocessed, {counts['skipped']} already there; peak RSS of one "
               f"process {peak / 1024:.0f} MB; cache {output / configuration}")
