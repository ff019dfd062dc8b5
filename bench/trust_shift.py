"""Dataset shift on the shared datasets (issue 20, item 4): Fréchet distances between every pair of datasets and
between each dataset and intensity-shifted copies of itself, and per-case OOD AUROC.

Features: ``medseg.trust.features.texture_features`` (first-order statistics, gradients, scikit-image GLCM) of at
most ``--cases`` cases per dataset (evenly spaced over the sorted case ids; all of them when fewer).

  pairs     ``dataset_distance(A, B)``: standardised by the mean and standard deviation of A and B together
  shifted   A against A with every image + s x (its own standard deviation), s in ``SHIFTS``
  ood       a reference fitted on A's even-indexed cases; AUROC of telling A's odd-indexed (held-out) cases from
            every case of B by Mahalanobis distance; and the real two-site shift of ``cxr_lungs`` (fit on half of
            the Montgomery cases, held-out Montgomery vs Shenzhen), and held-out A vs A shifted by 0.5 sd

Writes ``bench/results/trust_shift.json`` (the ``shift`` part of ``bench/results/trust.json``'s acceptance keys)
and prints tables.

    nice -n 19 python bench/trust_shift.py [--cases 60]      # ~10 minutes on 2 cores at load 17 (about 2 CPU-minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from medseg.trust.features import FeatureTable, dataset_features
from medseg.trust.shift import dataset_distance, fit_reference, ood_auroc

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DATASETS = ["isbi2012_em", "drive", "cvc_clinicdb", "brats2013_mini", "monuseg", "hippocampus", "cxr_lungs"]
SHIFTS = [0.1, 0.25, 0.5, 1.0]


def case_ids(name: str, limit: int) -> list[str]:
    ending = json.loads((DATA / name / "dataset.json").read_text())["file_ending"]
    ids = sorted(p.name[: -len(ending)] for p in (DATA / name / "labelsTr").iterdir() if p.name.endswith(ending))
    if len(ids) <= limit:
        return ids
    return [ids[i] for i in np.linspace(0, len(ids) - 1, limit).round().astype(int)]


def rows(table: FeatureTable, index) -> FeatureTable:
    index = list(index)
    return FeatureTable([table.case_ids[i] for i in index], table.names, table.values[index], table.feature_set)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=60, help="at most this many cases per dataset")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "trust_shift.json")
    args = parser.parse_args()
    start = time.time()
    names = [n for n in DATASETS if (DATA / n).is_dir()]
    tables, seconds = {}, {}
    for name in names:
        t = time.time()
        tables[name] = dataset_features(DATA / name, cases=case_ids(name, args.cases), progress=False)
        seconds[name] = (time.time() - t) / len(tables[name].case_ids)
        print(f"{name}: {len(tables[name].case_ids)} cases, {seconds[name]:.2f} s/case", flush=True)
    pairs = {a: {b: dataset_distance(tables[a], tables[b]).distance for b in names} for a in names}
    shifted, shifted_tables = {}, {}
    for name in names:
        shifted[name] = {}
        for s in SHIFTS:
            copy = dataset_features(DATA / name, cases=tables[name].case_ids, intensity_shift=s, progress=False)
            shifted_tables[(name, s)] = copy
            shifted[name][str(s)] = dataset_distance(tables[name], copy).distance
        print(f"{name} shifted: " + ", ".join(f"{s}: {d:.3g}" for s, d in shifted[name].items()), flush=True)
    ood: dict = {"held_out_vs_other_dataset": {}, "held_out_vs_shifted_0.5sd": {}}
    for a in names:
        n = len(tables[a].case_ids)
        if n < 6:  # brats2013_mini (4 cases): too few to fit on half and hold out the other half
            continue
        reference = fit_reference(rows(tables[a], range(0, n, 2)))
        inside = reference.distances(rows(tables[a], range(1, n, 2)).values)
        ood["held_out_vs_other_dataset"][a] = {
            b: ood_auroc(inside, reference.distances(tables[b].values)) for b in names if b != a}
        moved = reference.distances(rows(shifted_tables[(a, 0.5)], range(1, n, 2)).values)
        ood["held_out_vs_shifted_0.5sd"][a] = ood_auroc(inside, moved)
    sites = dict(line.split("\t")[0::2] for line in (DATA / "cxr_lungs" / "cases.tsv").read_text().splitlines()
                 if line.strip())
    montgomery = sorted(c for c, s in sites.items() if s.strip() == "Montgomery")
    shenzhen = sorted(c for c, s in sites.items() if s.strip() == "Shenzhen")
    root = DATA / "cxr_lungs"
    reference = fit_reference(dataset_features(root, cases=montgomery[0::2], progress=False))
    inside = reference.distances(dataset_features(root, cases=montgomery[1::2], progress=False).values)
    outside = reference.distances(dataset_features(root, cases=shenzhen, progress=False).values)
    ood["cxr_lungs_montgomery_vs_shenzhen"] = {
        "fit_cases": len(montgomery[0::2]), "held_out_montgomery": len(inside), "shenzhen": len(outside),
        "auroc": ood_auroc(inside, outside), "threshold": reference.threshold,
        "flagged_held_out_montgomery": float(np.mean(inside > reference.threshold)),
        "flagged_shenzhen": float(np.mean(outside > reference.threshold))}
    result = {
        "command": "python bench/trust_shift.py " + (f"--cases {args.cases}" if args.cases != 60 else ""),
        "date": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average": os.getloadavg(), "seconds": time.time() - start,
        "features": "texture (23: first-order, gradient, GLCM at distances 1 and 3; scikit-image)",
        "cases": {n: len(tables[n].case_ids) for n in names}, "feature_seconds_per_case": seconds,
        "shift": {"pairs": pairs, "shifted_copies": shifted, "ood_auroc": ood}}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1))
    width = max(map(len, names))
    print("\nFréchet distance (symmetric)\n" + " " * width + "".join(f"{b[:10]:>12}" for b in names))
    for a in names:
        print(f"{a:<{width}}" + "".join(f"{pairs[a][b]:>12.3g}" for b in names))
    print(f"\ncxr_lungs Montgomery vs Shenzhen AUROC {ood['cxr_lungs_montgomery_vs_shenzhen']['auroc']:.3f}")
    print(f"wrote {args.output} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
