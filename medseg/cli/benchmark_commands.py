"""``medseg benchmark``: networks x datasets at one wall-clock budget, with paired statistics and ranks
(``medseg.benchmark``)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def benchmark(
    datasets: List[Path] = typer.Argument(..., help="Dataset folders (nnU-Net v2 layout)."),
    networks: List[str] = typer.Option(..., "--networks", "-n", help="Networks of medseg models, comma-separated "
                                       "or repeated: --networks unet,resunet,swin_unetr."),
    budget: str = typer.Option("10m", "--budget", help="Training wall-clock budget of each network on each dataset."),
    output: Path = typer.Option(..., "-o", "--output", help="Benchmark folder (rerun the same command to resume: "
                                "finished cells are skipped)."),
    test_fraction: float = typer.Option(0.25, "--test-fraction", help="Held-out block: the last fraction of case "
                                        "ids in sorted order (a dataset's labelled imagesTs/labelsTs instead)."),
    configuration: Optional[str] = typer.Option(None, "-c", "--configuration", help="Plan configuration (default: "
                                                "3d_fullres for 3D data, 2d for 2D)."),
    roi_folder: Optional[str] = typer.Option(None, "--roi-folder", help="Per-case masks to score inside, where a "
                                             "dataset has them, e.g. fovTr (DRIVE's field of view)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Cells trained side by side, each on an equal share of the "
                             "cores (every cell still gets the same compute for its budget)."),
) -> None:
    """Train every network on every dataset at one budget through the same plan, score the held-out block, and
    compare them: per-case paired tests (Wilcoxon, paired bootstrap, Holm), ranks with the critical difference."""
    from rich.console import Console
    from rich.table import Table

    from medseg.benchmark.grid import BenchmarkRequest, grid_table, parse_networks, run_benchmark
    from medseg.planning.budget import parse_duration

    request = BenchmarkRequest(datasets=list(datasets), networks=parse_networks(networks),
                               budget_seconds=parse_duration(budget), output=output, test_fraction=test_fraction,
                               configuration=configuration, roi_folder=roi_folder, jobs=jobs)
    console = Console(stderr=True)

    def show(dataset: str, network: str, result: dict | None) -> None:
        if result is None:
            console.print(f"training {network} on {dataset} ({budget})")
            return
        table = Table("dataset", *request.networks, title="Dice on the held-out block")
        for row in grid_table(request):
            table.add_row(*row)
        console.print(table)

    summary = run_benchmark(request, on_cell=show)
    for name, rank in sorted(summary.get("ranks", {}).items(), key=lambda item: item[1]):
        typer.echo(f"{name}: average rank {rank:.2f}")
    typer.echo(f"wrote {Path(output) / 'benchmark.json'}")
