"""The self-describing model folder that `train` writes and `predict` reads (no training code needed to load).

Layout::

    MODEL/
      model.json            {"schema_version", "configuration", "network": PlanUNet config, "label_values": [...],
                             "regions": {...}}
      plans.json            the Plan (normalisation, spacing, patch size of every configuration)
      dataset_spec.json     channels, labels, file ending
      splits.json           [{"train": [...], "val": [...]}, ...] the cross-validation folds
      fold_K/
        weights.safetensors         final (or best-so-far) network weights
        weights.json                {"schema_version": 1, "file": "weights.safetensors", "sha256": hex} written
                                    right after the weights; loading refuses a file whose bytes differ. Folders
                                    from before it (no weights.json) still load, with a logged warning.
        checkpoint.pt               latest training state (weights, optimiser, schedule, RNG), torch.load(weights_only=True)
        training_log.json           per-epoch losses, validation Dice, time used
        progress.png                loss and Dice curves
        validation/                 predictions of the fold's validation cases (for post-processing and find-best)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.config import DatasetSpec, Plan, read_json, write_json_atomic
from medseg.errors import MedsegError

SCHEMA_VERSION = 1
WEIGHTS = "weights.safetensors"
WEIGHTS_RECORD = "weights.json"


@dataclass
class ModelInfo:
    configuration: str
    network: dict[str, Any]  # PlanUNet constructor kwargs
    label_values: list[int]  # output channel i predicts label_values[i]
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "configuration": self.configuration,
                "network": self.network, "label_values": self.label_values}


def write_model_info(folder: Path, info: ModelInfo, plan: Plan, spec: DatasetSpec) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(info.to_dict(), folder / "model.json")
    write_json_atomic(plan.to_dict(), folder / "plans.json")
    write_json_atomic(spec.to_dict(), folder / "dataset_spec.json")


def read_model_info(folder: str | Path) -> tuple[ModelInfo, Plan, DatasetSpec]:
    folder = Path(folder)
    if not (folder / "model.json").is_file():
        raise MedsegError("not a medseg model folder (no model.json)", path=folder,
                          fix="pass the folder that medseg train wrote")
    raw = read_json(folder / "model.json")
    info = ModelInfo(raw["configuration"], raw["network"], [int(v) for v in raw["label_values"]],
                     int(raw.get("schema_version", SCHEMA_VERSION)))
    plan = Plan.from_dict(read_json(folder / "plans.json"))
    spec = DatasetSpec.from_dict(read_json(folder / "dataset_spec.json"))
    return info, plan, spec


def fold_folder(model: Path, fold: int | str) -> Path:
    return Path(model) / f"fold_{fold}"


def available_folds(model: str | Path) -> list[str]:
    """Folds with final weights, e.g. ``["0", "1"]`` or ``["all"]``."""
    return sorted(p.name.removeprefix("fold_") for p in Path(model).glob("fold_*")
                  if (p / WEIGHTS).is_file())


def write_fold_weights(fold_dir: Path, state_dict: dict[str, Any]) -> Path:
    """Write ``fold_dir/weights.safetensors`` and then its ``weights.json`` (sha256). The old record goes first,
    so a run killed in between leaves unverified weights (a warning at load), never a false 'damaged' error."""
    from medseg.weights_file import save_weights

    fold_dir = Path(fold_dir)
    (fold_dir / WEIGHTS_RECORD).unlink(missing_ok=True)
    digest = save_weights(state_dict, fold_dir / WEIGHTS)
    write_json_atomic({"schema_version": 1, "file": WEIGHTS, "sha256": digest}, fold_dir / WEIGHTS_RECORD)
    return fold_dir / WEIGHTS


def recorded_sha256(fold_dir: Path) -> str | None:
    """The sha256 that ``weights.json`` records for the fold's weights, or None for a folder without one."""
    record = Path(fold_dir) / WEIGHTS_RECORD
    if not record.is_file():
        return None
    raw = read_json(record)
    digest = raw.get("sha256") if isinstance(raw, dict) else None
    if not isinstance(digest, str) or len(digest) != 64:
        raise MedsegError("weights.json has no valid sha256", path=record,
                          fix="retrain the fold or restore the file")
    return digest


def load_network(model: str | Path, fold: int | str, *, device: str = "cpu"):
    """The trained ``PlanUNet`` of one fold, in eval mode, weights read with safetensors (never unpickled) and
    checked against the sha256 in ``weights.json``."""
    from medseg.nets.plan_unet import PlanUNet
    from medseg.weights_file import load_weights

    info, _, _ = read_model_info(model)
    fold_dir = fold_folder(Path(model), fold)
    path = fold_dir / WEIGHTS
    if not path.is_file():
        raise MedsegError(f"fold {fold} has no weights", path=path,
                          fix=f"train it (medseg train ... -f {fold}) or choose one of {available_folds(model)}")
    network = PlanUNet.from_config(dict(info.network))
    state = load_weights(path, recorded_sha256(fold_dir), device=device)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise MedsegError(f"weights do not fit the network ({str(error).splitlines()[0]})", path=path,
                          fix="the model folder is inconsistent; retrain the fold") from None
    network.deep_supervision = False  # full-resolution logits only
    return network.to(device).eval()
