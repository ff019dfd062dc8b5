"""The ``evaluate`` command: metrics of a prediction folder against a reference folder (heavy imports inside)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def evaluate(
    pred: Path = typer.Argument(..., help="Folder of predicted label files (case id = file name without suffix)."),
    ref: Path = typer.Argument(..., help="Folder of reference label files, same case ids and grids."),
    labels: Optional[str] = typer.Option(None, help="Label values to score, e.g. '1,2,3' (default: every non-zero "
                                         "value in the references, or the labels of --dataset-json)."),
    regions: Optional[str] = typer.Option(None, help="Regions instead of labels: 'whole_tumor=1,2,3,4;tumor_core="
                                          "1,3,4', a dataset.json path, or 'dataset' (dataset.json next to/above "
                                          "REF) for its regions_commonly_scored."),
    roi: Optional[Path] = typer.Option(None, "--roi", help="Folder of ROI masks (e.g. DRIVE's field of view): "
                                       "everything outside is ignored."),
    dataset_json: Optional[Path] = typer.Option(None, "--dataset-json", help="dataset.json whose labels name the "
                                                "classes."),
    output: Path = typer.Option(Path("evaluation"), "-o", "--output", help="Folder for metrics.csv, summary.json "
                                "and plots/."),
    metrics: str = typer.Option("default", help="Comma-separated metric keys, 'default' or 'all' (see "
                                "docs/metrics.md)."),
    surface: str = typer.Option("voxel", help="Surface convention: 'voxel' (MONAI/medpy) or 'surfel' (DeepMind)."),
    hd95: str = typer.Option("max", help="HD95 definition: 'max' or 'mean' of the directed 95th percentiles, or "
                             "'pooled'."),
    nsd_tolerance: float = typer.Option(1.0, help="NSD / surface Dice tolerance in mm."),
    workers: Optional[int] = typer.Option(None, help="Worker processes (default: min(cores, cases))."),
    plots: bool = typer.Option(True, help="Write a box plot per metric."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace metrics.csv, summary.json and plots/ "
                                   "already in the output folder (default: refuse)."),
    instances: bool = typer.Option(False, "--instances", help="PRED and REF hold instance maps (0 background, one "
                                   "value per object, e.g. instancesTr/): PQ, SQ, RQ, detection F1 and AJI on the "
                                   "objects, Dice on the foreground (the default metrics then)."),
    raters: bool = typer.Option(False, "--raters", help="PRED holds a probabilistic model's samples <case>_s<K> "
                                "(medseg predict --samples: OUTPUT/samples), REF the raters' <case>_r<K> maps: "
                                "generalised energy distance, best-of-N Dice and calibration against the raters' "
                                "vote share per case (raters.csv, raters.json)."),
    probabilities: Optional[Path] = typer.Option(None, "--probabilities", help="Folder of <case>.npz (medseg "
                                                 "predict --save-probabilities): also ECE, Brier score and a "
                                                 "reliability diagram per class (calibration.json, "
                                                 "plots/reliability_<class>.png)."),
) -> None:
    """Per-case, per-class metrics (CSV), a summary with 95% bootstrap CIs (JSON) and box plots (PNG)."""
    from medseg.errors import MedsegError
    from medseg.evaluation import evaluate as run_evaluation
    from medseg.metrics.compute import ALL_METRICS, DEFAULT_METRICS, INSTANCE_MAP_METRICS, MetricOptions
    from medseg.output_paths import prepare_output_dir

    if raters:
        from medseg.evaluation.raters_report import evaluate_raters

        prepare_output_dir(output, inputs=[pred, ref], overwrite=overwrite, names=["raters.csv", "raters.json"])
        values = [int(v) for v in labels.split(",")] if labels else None
        summary = evaluate_raters(pred, ref, output, labels=values)
        typer.echo("raters: " + ", ".join(f"{key} {value['mean']:.4g}" for key, value in summary["metrics"].items())
                   + f" over {summary['cases']} case(s)")
        typer.echo(f"wrote {output / 'raters.csv'} and {output / 'raters.json'}")
        return
    prepare_output_dir(output, inputs=[pred, ref] + ([roi] if roi is not None else [])
                       + ([probabilities] if probabilities is not None else []), overwrite=overwrite,
                       names=["metrics.csv", "summary.json", "plots"]
                       + (["calibration.json"] if probabilities is not None else []))
    if probabilities is not None:
        from medseg.evaluation.calibration_report import pair_probability_files

        pair_probability_files(probabilities, ref, roi)  # a missing probability file fails before any work

    if metrics == "default":
        keys = INSTANCE_MAP_METRICS if instances else DEFAULT_METRICS
    elif metrics == "all":
        keys = ALL_METRICS
    else:
        keys = tuple(k.strip() for k in metrics.split(",") if k.strip())
    try:
        options = MetricOptions(metrics=keys, surface_mode=surface, hd95_definition=hd95, nsd_tolerance=nsd_tolerance)
    except ValueError as error:
        raise MedsegError(str(error), fix="see docs/metrics.md for the metric keys and conventions") from None
    result = run_evaluation(pred, ref, output, labels=labels, regions=regions, roi_dir=roi, dataset_json=dataset_json,
                            options=options, workers=workers, plots=plots, instances=instances)
    for name, values in result.summary_data["metrics"].items():
        line = ", ".join(f"{m} {values[m]['mean']:.4g}" for m in keys[:4])
        typer.echo(f"{name}: {line}")
    typer.echo(f"wrote {result.csv}, {result.summary} and {len(result.plots)} plots")
    if probabilities is not None:
        from medseg.evaluation.calibration_report import probability_calibration

        calibration = probability_calibration(probabilities, ref, output, roi_dir=roi, plots=plots)
        for name, values in calibration["classes"].items():
            typer.echo(f"{name}: ECE {values['ece']:.4g}, Brier {values['brier']:.4g}")
        typer.echo(f"top label: ECE {calibration['top_label']['ece']:.4g}, Brier "
                   f"{calibration['top_label']['brier']:.4g}; wrote {output / 'calibration.json'}")
