"""Plan -> preprocess -> iterate batches on every dataset in ../shared/data, with each stage's peak memory.

Each stage runs as its own process under /usr/bin/time, so the figure is the stage's peak resident memory
(the largest of the process and its worker processes). Writes bench/results/data_path.json and prints a table.

    python bench/data_path.py [--batches 100] [--budget 20m]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CONFIGURATIONS = {"isbi2012_em": ["2d"], "drive": ["2d"], "cvc_clinicdb": ["2d"],
                  "brats2013_mini": ["2d", "3d_fullres"]}
ITERATE = """
import sys, json
from medseg.config import Plan, read_json
from medseg.data.loader import PatchLoader
plan = Plan.from_dict(read_json(sys.argv[1])).configurations[sys.argv[2]]
loader = PatchLoader(sys.argv[3], plan.patch_size, plan.batch_size, num_workers=1, num_batches=int(sys.argv[4]))
shapes = set()
for batch in loader:
    shapes.add(tuple(batch["image"].shape))
print(json.dumps(sorted(shapes)))
"""


def timed(command: list[str]) -> dict:
    started = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-f", "MAXRSS_KB=%M", *command], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{command} failed:\n{result.stderr[-2000:]}")
    rss = int([line for line in result.stderr.splitlines() if line.startswith("MAXRSS_KB=")][-1].split("=")[1])
    return {"seconds": round(time.perf_counter() - started, 1), "peak_rss_mb": round(rss / 1024, 1),
            "stdout": result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--budget", default="20m")
    args = parser.parse_args()
    medseg = [sys.executable, "-m", "medseg"]
    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores", "load_at_start": os.getloadavg()[0],
               "budget": args.budget, "batches": args.batches, "datasets": {}}
    with tempfile.TemporaryDirectory() as work:
        for name, configurations in CONFIGURATIONS.items():
            if not (DATA / name).is_dir():
                continue
            plans = Path(work) / f"{name}_plans.json"
            entry = {"plan": timed([*medseg, "plan", str(DATA / name), "--budget", args.budget, "-o", str(plans)])}
            for configuration in configurations:
                cache = Path(work) / name
                entry[f"preprocess_{configuration}"] = timed(
                    [*medseg, "preprocess", str(DATA / name), "-c", configuration, "-p", str(plans), "-o", str(cache)])
                entry[f"iterate_{configuration}"] = timed(
                    [sys.executable, "-c", ITERATE, str(plans), configuration, str(cache / configuration),
                     str(args.batches)])
                cache_bytes = sum(p.stat().st_size for p in (cache / configuration).iterdir())
                entry[f"cache_{configuration}_mb"] = round(cache_bytes / 2**20, 1)
            results["datasets"][name] = entry
            print(f"done {name}", file=sys.stderr)
    results["load_at_end"] = os.getloadavg()[0]
    (ROOT / "bench" / "results" / "data_path.json").write_text(json.dumps(results, indent=1))
    print("| dataset | stage | seconds | peak RSS (MB) |\n|---|---|---|---|")
    for name, entry in results["datasets"].items():
        for stage, value in entry.items():
            if isinstance(value, dict):
                print(f"| {name} | {stage} | {value['seconds']} | {value['peak_rss_mb']} |")


if __name__ == "__main__":
    main()
