"""The ``active`` command: an active-learning run on a labelled dataset, its own labels revealed as the oracle
(``medseg.active``; heavy imports inside the function)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def active(
    dataset: Path = typer.Argument(..., help="A raw dataset whose every case is labelled (the labels play the "
                                   "oracle: revealed only when a case is queried)."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder of the run (active.json, active.png, the "
                                "rounds' models); the same command resumes an interrupted run."),
    initial: int = typer.Option(5, "--initial", help="Cases labelled at random before the first round."),
    query: int = typer.Option(5, "--query", help="Cases queried (labelled) per round."),
    rounds: int = typer.Option(3, "--rounds", help="Query rounds after the initial model."),
    strategy: str = typer.Option("random,entropy", "--strategy", help="Comma-separated: random, entropy, "
                                 "ensemble-disagreement, coreset (each compared on the same initial cases)."),
    seeds: int = typer.Option(1, "--seeds", help="Repeats with other initial draws and training seeds (0..N-1)."),
    budget: str = typer.Option("2m", "--budget", help="Training budget of each round's model, e.g. 2m."),
    max_iterations: Optional[int] = typer.Option(None, "--max-iterations", help="At most this many training steps "
                                                 "per round's model."),
    configuration: Optional[str] = typer.Option(None, "-c", "--configuration", help="Configuration of the plan "
                                                "(default: 3d_fullres for 3D data, 2d for 2D)."),
    test_fraction: float = typer.Option(0.25, "--test-fraction", help="The held-out block: this last fraction of "
                                        "the sorted case ids, never queried."),
    test_cases: Optional[int] = typer.Option(None, "--test-cases", help="Score only this many of the held-out "
                                             "block's cases, evenly spaced (faster rounds)."),
    pool_size: Optional[int] = typer.Option(None, "--pool-size", help="Draw the unlabelled pool as this many of "
                                            "the other cases (default: all of them)."),
    members: int = typer.Option(2, "--members", help="Models per round for ensemble-disagreement."),
    set_: List[str] = typer.Option([], "--set", help="A plan override, repeatable (e.g. --set "
                                   "2d.patch_size=[128,128])."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Loader worker processes of each training."),
    keep_models: bool = typer.Option(False, "--keep-models", help="Keep every round's model (default: the last "
                                     "round's only)."),
) -> None:
    """Active learning: train, predict the unlabelled pool, query the cases a strategy ranks first, add their
    labels, retrain; writes the held-out Dice vs labelled cases curve (active.json, active.png)."""
    from medseg.active import ActiveSettings, run_active_learning
    from medseg.errors import MedsegError
    from medseg.planning.budget import parse_duration

    if seeds < 1:
        raise MedsegError(f"--seeds {seeds} is not positive", fix="use --seeds 1 or more")
    settings = ActiveSettings(initial=initial, query=query, rounds=rounds, strategies=tuple(strategy.split(",")),
                              seeds=tuple(range(seeds)), budget_seconds=parse_duration(budget),
                              max_iterations=max_iterations, configuration=configuration,
                              test_fraction=test_fraction, test_cases=test_cases, pool_size=pool_size,
                              members=members, plan_overrides=tuple(set_), keep_models=keep_models,
                              train_options={"num_workers": workers} if workers is not None else {})
    results = run_active_learning(dataset, output, settings, log=typer.echo)
    typer.echo("held-out Dice by labelled cases (mean over seeds):")
    for name, line in results["curve"].items():
        typer.echo(f"  {name:<22} " + "  ".join(f"{n}: {d:.3f}" for n, d in zip(line["labelled"], line["mean_dice"])))
    typer.echo(f"wrote {output / 'active.json'} and {output / 'active.png'}")
