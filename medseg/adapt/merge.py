"""``medseg adapt merge``: an adapted folder of deltas -> a self-contained model folder with full weights (LoRA
folded into the weights), which loads without its base model. Adapter methods keep their adapters (they are not
linear in the input, so nothing folds them away); the folder keeps the adaptation record, without a base."""

from __future__ import annotations

from pathlib import Path

from medseg.config.adaptation import ADAPTATION, adaptation_record
from medseg.config.model_folder import (
    available_folds,
    fold_folder,
    read_segmentation_model,
)
from medseg.errors import MedsegError


def merge_adapted(model: str | Path, output: str | Path) -> Path:
    """Write the merged folder ``output`` (new; appears only when complete) of the adapted folder ``model``."""
    import copy
    import shutil

    from medseg.atomic import atomic_folder
    from medseg.config.model_folder import write_fold_weights, write_segmentation_model
    from medseg.nets.adapted import load_adapted_network
    from medseg.nets.peft import has_adapters
    from medseg.output_paths import prepare_output_dir

    model, output = Path(model), Path(output)
    if not model.is_dir():
        raise MedsegError("adapted model folder not found", path=model, fix="pass the folder that medseg adapt wrote")
    spec, plan, dataset = read_segmentation_model(model)
    record = adaptation_record(spec, model)
    if record is None or record.base is None:
        raise MedsegError("not a folder of adaptation deltas" + (" (already merged)" if record else ""), path=model,
                          fix="pass the folder that medseg adapt wrote (it loads as it is)")
    prepare_output_dir(output, inputs=[model], must_not_exist=True)
    folds = available_folds(model)
    networks = {fold: load_adapted_network(model, fold, spec) for fold in folds}
    merged = copy.deepcopy(spec)
    record.base = None
    if not any(has_adapters(n) for n in networks.values()):
        record.structure = None  # LoRA folded in: the plain network
    merged.extra[ADAPTATION] = record.to_dict()
    with atomic_folder(output) as partial:
        write_segmentation_model(partial, merged, plan, dataset)
        for fold, network in networks.items():
            write_fold_weights(fold_folder(partial, fold), network.state_dict())
            for name in ("training_log.json", "train_config.json", "progress.png"):
                if (fold_folder(model, fold) / name).is_file():
                    shutil.copy2(fold_folder(model, fold) / name, fold_folder(partial, fold) / name)
    return output
