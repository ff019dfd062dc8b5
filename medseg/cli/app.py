"""Every ``medseg`` subcommand is registered here, in one table.

Command modules import only typer at the top; the heavy libraries (torch, SimpleITK, scipy) are imported inside
the command functions, so ``medseg --help`` starts in well under a second.
"""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Callable

import typer

from medseg.errors import MedsegError

# name -> "module:function". Add a line here to add a command; "group command" (one space) adds a command to the
# sub-command group of GROUPS.
COMMANDS: dict[str, str] = {
    "demo": "medseg.cli.dataset_commands:demo",
    "convert": "medseg.cli.dataset_commands:convert",
    "check": "medseg.cli.dataset_commands:check",
    "fingerprint": "medseg.cli.dataset_commands:fingerprint",
    "example-data": "medseg.cli.dataset_commands:example_data",
    "plan": "medseg.cli.pipeline_commands:plan",
    "preprocess": "medseg.cli.pipeline_commands:preprocess",
    "train": "medseg.cli.pipeline_commands:train",
    "evaluate": "medseg.cli.evaluate:evaluate",
    "models": "medseg.cli.models:models",
    "predict": "medseg.cli.predict_commands:predict",
    "find-best": "medseg.cli.predict_commands:find_best",
    "calibrate": "medseg.cli.calibration_commands:calibrate",
    "export": "medseg.cli.export_commands:export",
    "interactive": "medseg.cli.interactive_commands:interactive",
    "serve": "medseg.cli.serve_commands:serve",
    "eval-interactive": "medseg.cli.interactive_commands:eval_interactive",
    "train-interactive": "medseg.cli.interactive_training:train_interactive",
    "incontext": "medseg.cli.incontext_commands:incontext",
    "train-incontext": "medseg.cli.incontext_commands:train_incontext",
    "segment": "medseg.cli.universal_commands:segment",
    "train-universal": "medseg.cli.universal_commands:train_universal",
    "model upgrade": "medseg.cli.model_commands:upgrade",
    "adapt": "medseg.cli.adapt_commands:adapt",
    "pretrain": "medseg.cli.adapt_commands:pretrain",
    "model merge": "medseg.cli.adapt_commands:merge",
    "import nnunet": "medseg.cli.import_commands:nnunet",
    "dicomweb watch": "medseg.cli.dicomweb_commands:watch",
    "shift": "medseg.cli.shift_commands:shift",
    "qc": "medseg.cli.qc_commands:qc",
    "explain": "medseg.cli.explain_commands:explain",
    "active": "medseg.cli.active_commands:active",
    "classical": "medseg.cli.classical_commands:classical",
    "synth": "medseg.cli.synth_commands:synth",
    "raters simulate": "medseg.cli.rater_commands:simulate",
    "raters consensus": "medseg.cli.rater_commands:consensus",
    "benchmark": "medseg.cli.benchmark_commands:benchmark",
    "report": "medseg.cli.report_commands:report",
}
# group -> its help line
GROUPS: dict[str, str] = {
    "model": "Model folders: convert old ones to the current format (medseg model upgrade FOLDER); merge an "
             "adapted folder's deltas into full weights (medseg model merge ADAPTED -o MODEL).",
    "import": "Models of other tools as medseg model folders (medseg import nnunet RESULTS_FOLDER -o MODEL).",
    "raters": "Several raters' label maps per case (labelsTr/<case>_r<K>): simulate them from one label map per "
              "case (medseg raters simulate DATASET -o OUT), or write their majority vote (medseg raters consensus).",
    "dicomweb": "A PACS over DICOMweb: segment new studies and store DICOM SEG back (medseg dicomweb watch).",
}


def user_errors_exit_2(func: Callable) -> Callable:
    """Turn a ``MedsegError`` into one red line on stderr and exit code 2 (never a traceback)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except MedsegError as error:
            from rich.console import Console

            Console(stderr=True).print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="medseg",
        help="medseg: medical image segmentation - datasets, planning, training, prediction, evaluation.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    groups: dict[str, typer.Typer] = {}
    for name, target in COMMANDS.items():
        module_name, function_name = target.split(":")
        function = getattr(importlib.import_module(module_name), function_name)
        group, _, command = name.rpartition(" ")
        if group and group not in groups:
            groups[group] = typer.Typer(name=group, help=GROUPS[group], no_args_is_help=True)
            app.add_typer(groups[group])
        (groups[group] if group else app).command(command)(user_errors_exit_2(function))
    return app


app = build_app()


def main() -> None:
    from medseg.settings import apply_runtime_defaults

    apply_runtime_defaults()
    app()


if __name__ == "__main__":  # pragma: no cover - `python -m medseg.cli.app`
    sys.exit(main())
