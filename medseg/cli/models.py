"""``medseg models``: every registered network with its parameter count and GFLOPs at a given input size."""

from __future__ import annotations

import typer


def _parse_size(size: str) -> tuple[int, tuple[int, ...]]:
    from medseg.cli.size_text import sizes_from_text

    values = sizes_from_text(size, "--size", shape="CxYxX or CxZxYxX", example="--size 1x128x128 or 1x64x64x64",
                             lengths=(3, 4))
    return values[0], tuple(values[1:])


def model_table(size: str, num_classes: int = 2) -> list[dict]:
    """One row per network: name, family, parameters, forward GFLOPs at ``(1, *size)``, input used, note.

    Models are built and run on PyTorch's ``meta`` device: shapes only, so even the 3D transformers cost no
    memory or compute. FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from medseg.errors import MedsegError
    from medseg.nets import create, list_models, model_info

    channels, spatial = _parse_size(size)
    rows = []
    for name in list_models(spatial_dims=len(spatial)):
        info = model_info(name)
        row = {"name": name, "family": info.family, "deep_supervision": info.deep_supervision, "params": None,
               "gflops": None, "input": "x".join(map(str, spatial)), "note": ""}
        rows.append(row)
        try:
            with torch.device("meta"):
                model = create(name, len(spatial), channels, num_classes).eval()
        except MedsegError as error:
            missing = info.requires and info.requires in str(error)
            row["note"] = f"needs the optional package {info.requires}" if missing else f"unavailable: {error}"
            continue
        row["params"] = sum(p.numel() for p in model.parameters())
        used = tuple(model.valid_input_size(spatial)) if hasattr(model, "valid_input_size") else spatial
        if used != spatial:
            row["input"] = "x".join(map(str, used))
            row["note"] = f"unpadded: output {'x'.join(map(str, model.output_size(used)))}"
        try:
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model(torch.empty((1, channels, *used), device="meta"))
            row["gflops"] = counter.get_total_flops() / 1e9
        except (RuntimeError, MedsegError) as error:  # an input size the design cannot take
            row["note"] = f"does not run at this size: {str(error).splitlines()[0][:80]}"
    return rows


def models(size: str = typer.Option("1x128x128", "--size", help="input as CxYxX (2D) or CxZxYxX (3D)"),
           num_classes: int = typer.Option(2, "--classes", help="output classes"),
           as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table")) -> None:
    """List every network with its parameters and forward GFLOPs at --size (batch 1)."""
    rows = model_table(size, num_classes)
    if as_json:
        import json

        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"medseg networks at input 1x{size} ({num_classes} classes)")
    for column, justify in [("network", "left"), ("family", "left"), ("params (M)", "right"),
                            ("GFLOPs", "right"), ("deep sup.", "center"), ("input", "right"), ("note", "left")]:
        table.add_column(column, justify=justify)
    for row in rows:
        table.add_row(row["name"], row["family"], "-" if row["params"] is None else f"{row['params'] / 1e6:.2f}",
                      "-" if row["gflops"] is None else f"{row['gflops']:.2f}",
                      "yes" if row["deep_supervision"] else "", row["input"], row["note"])
    Console().print(table)
