"""Train the weights that ship with medseg, reproducibly: ``--incontext`` meta-trains the default in-context model
on every shared dataset's training block plus synthetic tasks and installs it as package data in
``medseg/incontext/weights/``; ``--interactive`` trains the promptable model of ``medseg interactive`` (today's
interaction simulator) on every shared dataset's training block into ``medseg/interactive/weights/``;
``--universal`` trains the universal model of ``medseg segment`` (``bench/universal.py universal``: every shared
dataset's benchmark training block, 7 x 7 minutes) into ``medseg/universal/weights/``, with its vocabulary and
each dataset's plan, and writes the held-out Dice of ``bench/results/universal.json`` on its card. Each is
installed as ``model.json`` with its WeightsCard, ``fold_all/weights.safetensors`` and its sha256 record (no
checkpoint), refusing weights over the package limit (10 MB; 20 MB for the universal model).

    python bench/train_shipped.py --incontext --budget 2h            # the shipped models (CPU, 2 cores)
    python bench/train_shipped.py --interactive --budget 1h
    python bench/train_shipped.py --universal --budget 49m --work /tmp/universal_bench   # trains, or installs
                                                                 # the model bench/universal.py trained there
    python bench/train_shipped.py --incontext --budget 20s --grid 32 --features 4,8 --max-cases 2 \\
        --datasets hippocampus --output /tmp/shipped_smoke            # a smoke run

The training log and curves of the run stay in ``--work`` (default: a folder under /tmp).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DATASETS = ["isbi2012_em", "drive", "cvc_clinicdb", "brats2013_mini", "monuseg", "hippocampus", "cxr_lungs"]
MAX_BYTES = 10 * 2**20
DEFAULT_FEATURES = "16,32,64,128"
UNIVERSAL_MAX_BYTES = 20 * 2**20
SHIPPED_FILES = ["model.json", "fold_all/weights.safetensors", "fold_all/weights.json"]


def install(model: Path, destination: Path, *, extra_files: list[str] = (), max_bytes: int = MAX_BYTES) -> Path:
    """Copy the files a shipped model needs from ``model`` into ``destination`` (replaced whole, atomically)."""
    from medseg.atomic import atomic_folder

    weights = model / "fold_all" / "weights.safetensors"
    if weights.stat().st_size > max_bytes:
        raise SystemExit(f"{weights} is {weights.stat().st_size / 2**20:.1f} MB, over the "
                         f"{max_bytes // 2**20} MB package limit")
    staged = destination.with_name(destination.name + ".new")
    if staged.exists():
        shutil.rmtree(staged)
    with atomic_folder(staged) as partial:
        for name in [*SHIPPED_FILES, *extra_files]:
            (partial / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(model / name, partial / name)
    if destination.exists():
        shutil.rmtree(destination)
    staged.rename(destination)
    return destination


def train_incontext_weights(args: argparse.Namespace) -> Path:
    from medseg.incontext.model import SHIPPED
    from medseg.incontext.session import InContextSession
    from medseg.incontext.training import incontext_train_config, train_incontext
    from medseg.nets.incontext_unet import InContextConfig
    from medseg.planning.budget import parse_duration

    datasets = [DATA / name if not Path(name).is_dir() else Path(name) for name in args.datasets]
    work = Path(args.work or tempfile.mkdtemp(prefix="medseg_shipped_incontext_"))
    config = incontext_train_config(budget_seconds=parse_duration(args.budget), seed=args.seed,
                                    threads=args.threads, validate_every=args.validate_every)
    network = InContextConfig(features=[int(f) for f in args.features.split(",")], stochastic=args.stochastic,
                              grid=[args.grid, args.grid])
    train_incontext(datasets, work / "model", config=config, network_config=network, max_cases=args.max_cases,
                    resume=(work / "model" / "fold_all" / "checkpoint.pt").is_file())
    destination = install(work / "model", Path(args.output) if args.output else SHIPPED)
    InContextSession(destination)  # the installed folder loads (sha256 verified)
    print(f"installed {destination} (run folder {work})")
    return destination


def train_interactive_weights(args: argparse.Namespace) -> Path:
    from medseg.interactive.predictor import SHIPPED, load_segmenter
    from medseg.interactive.training import interactive_train_config, train_interactive
    from medseg.nets.promptable_unet import PromptableConfig
    from medseg.planning.budget import parse_duration

    datasets = [DATA / name if not Path(name).is_dir() else Path(name) for name in args.datasets]
    work = Path(args.work or tempfile.mkdtemp(prefix="medseg_shipped_interactive_"))
    config = interactive_train_config(budget_seconds=parse_duration(args.budget), seed=args.seed,
                                      threads=args.threads)
    features = args.features if args.features != DEFAULT_FEATURES else "8,16,32,64,128"  # train-interactive's
    network = PromptableConfig(features=[int(f) for f in features.split(",")], grid=[args.grid, args.grid])
    train_interactive(datasets, work / "model", config=config, network_config=network,
                      grid=(args.grid, args.grid), resume=(work / "model" / "fold_all" / "checkpoint.pt").is_file())
    destination = install(work / "model", Path(args.output) if args.output else SHIPPED)
    load_segmenter(destination)  # the installed folder loads (sha256 verified)
    print(f"installed {destination} (run folder {work})")
    return destination


def train_universal_weights(args: argparse.Namespace) -> Path:
    import json
    import subprocess

    from medseg.config.model_folder import read_model_spec, write_model_spec
    from medseg.planning.budget import parse_duration
    from medseg.universal.model import SHIPPED, UniversalModel

    work = Path(args.work or tempfile.mkdtemp(prefix="medseg_shipped_universal_"))
    model = work / "universal" / "model"
    per_dataset = parse_duration(args.budget) / len(args.datasets)
    if not (model / "fold_all" / "weights.safetensors").is_file():  # bench/universal.py trains and scores it
        subprocess.run([sys.executable, str(ROOT / "bench" / "universal.py"), "universal", "--work", str(work),
                        "--budget", str(per_dataset), "--datasets", *args.datasets,
                        "--threads", str(args.threads or 1)], check=True)
    spec = read_model_spec(model)
    results = ROOT / "bench" / "results" / "universal.json"
    if results.is_file():
        figures = json.loads(results.read_text())
        spec.card.figures["held_out_dice"] = {d: {c: v["universal"] for c, v in classes.items()}
                                              for d, classes in figures.get("results", {}).items()}
        spec.card.figures["protocol"] = ("bench/universal.py: each dataset's last 25 % of sorted case ids held "
                                         "out; Dice per class, mean over the held-out cases")
    write_model_spec(model, spec)
    plans = [str(p.relative_to(model)) for p in sorted((model / "datasets").glob("*/plans.json"))]
    destination = install(model, Path(args.output) if args.output else SHIPPED,
                          extra_files=["vocabulary.json", *plans], max_bytes=UNIVERSAL_MAX_BYTES)
    UniversalModel.from_folder(destination)  # the installed folder loads (sha256 verified)
    print(f"installed {destination} (run folder {work})")
    return destination


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--incontext", action="store_true", help="train the shipped in-context model")
    parser.add_argument("--interactive", action="store_true", help="train the shipped promptable model")
    parser.add_argument("--universal", action="store_true", help="train the shipped universal model")
    parser.add_argument("--datasets", nargs="+", default=DATASETS, help="shared dataset names or folders")
    parser.add_argument("--budget", default="2h")
    parser.add_argument("--grid", type=int, default=128)
    parser.add_argument("--features", default=DEFAULT_FEATURES, help="channels per level (default: 16,32,64,128 "
                        "in-context, 8,16,32,64,128 promptable)")
    parser.add_argument("--stochastic", action="store_true", help="the Tyche network (several candidates)")
    parser.add_argument("--max-cases", type=int, default=None, help="cases per dataset block (smoke runs)")
    parser.add_argument("--validate-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=None, help="run folder (resumed when it holds a checkpoint)")
    parser.add_argument("--output", default=None, help="install here instead of medseg/incontext/weights/")
    args = parser.parse_args(argv)
    if args.incontext + args.interactive + args.universal != 1:
        parser.error("choose what to train: --incontext, --interactive or --universal")
    if args.incontext:
        train_incontext_weights(args)
    elif args.interactive:
        train_interactive_weights(args)
    else:
        train_universal_weights(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
