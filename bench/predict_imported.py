"""The ``imported`` row of ``bench/predict.py``: a real nnU-Net v2 model, trained briefly on this CPU, predicted by
nnU-Net's own predictor and, after ``medseg import nnunet``, by medseg's ``Predictor``; voxel agreement, Dice
between the two predictions per label, seconds per case of both.

Data: ``hippocampus`` (3d_fullres); nnU-Net trains fold ``all`` on the first ``TRAIN_CASES`` case ids (sorted) with
``bench/nnunet_budget_trainer.py`` under a wall-clock budget; the last ``TEST_CASES`` case ids are held out and
predicted by both. Both predictors run with nnU-Net's defaults: step 0.5, Gaussian weighting, mirroring over the
checkpoint's allowed axes, fold ``all``, on the CPU, end to end from files (read, preprocess, predict, export):

  nnU-Net  ``nnunet_budget_trainer.py predict`` (``nnUNetPredictor.predict_from_files``, 3 + 3 worker processes)
  medseg   ``medseg predict -i TEST -o OUT -m IMPORTED``

The nnU-Net folders (``nnUNet_raw`` / ``_preprocessed`` / ``_results``) live under ``--work``, set in the
subprocesses' environment only; a trained model already there is reused (``--retrain`` trains again).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from pipeline import BIN, DATA, TRAINER, _link_files, run  # bench/pipeline.py (this folder is on sys.path)

DATASET = "hippocampus"
TASK_ID = 904
CONFIGURATION = "3d_fullres"
TRAIN_CASES = 60
TEST_CASES = 8


def _folders(work: Path) -> dict:
    source = DATA / DATASET
    spec = json.loads((source / "dataset.json").read_text())
    ending = spec["file_ending"]
    ids = sorted(p.name[: -len(ending)] for p in (source / "labelsTr").iterdir() if p.name.endswith(ending))
    train, test = ids[:TRAIN_CASES], ids[-TEST_CASES:]
    name = f"Dataset{TASK_ID}_{DATASET}"
    roots = {key: work / "nnunet" / key for key in ("raw", "preprocessed", "results")}
    return {"spec": spec, "ending": ending, "train": train, "test": test, "name": name, "roots": roots,
            "raw": roots["raw"] / name, "test_images": work / "test" / "imagesTs",
            "test_labels": work / "test" / "labelsTs",
            "model": roots["results"] / name / f"nnUNetTrainerBudget__nnUNetPlans__{CONFIGURATION}"}


def _environment(folders: dict) -> dict:
    return {**os.environ, **{f"nnUNet_{key}": str(path) for key, path in folders["roots"].items()}}


def train_nnunet(work: Path, budget_seconds: float, *, retrain: bool = False) -> dict:
    """The raw dataset (symlinks), ``nnUNetv2_plan_and_preprocess`` and a budget training, unless a trained
    model is already under ``work``. Returns the folders and the training record."""
    folders = _folders(work)
    source, ending = DATA / DATASET, folders["ending"]
    record_path = folders["model"] / "fold_all" / "budget_run.json"
    if retrain or not (folders["model"] / "fold_all" / "checkpoint_final.pth").is_file():
        shutil.rmtree(work, ignore_errors=True)
        raw = folders["raw"]
        _link_files(source / "imagesTr", raw / "imagesTr", folders["train"], ending, True)
        _link_files(source / "labelsTr", raw / "labelsTr", folders["train"], ending, False)
        (raw / "dataset.json").write_text(json.dumps({**folders["spec"], "numTraining": len(folders["train"])}))
        _link_files(source / "imagesTr", folders["test_images"], folders["test"], ending, True)
        _link_files(source / "labelsTr", folders["test_labels"], folders["test"], ending, False)
        work.joinpath("logs").mkdir()
        env = _environment(folders)
        run([BIN / "nnUNetv2_plan_and_preprocess", "-d", TASK_ID, "-c", CONFIGURATION, "-np", "2"],
            work / "logs" / "plan_and_preprocess.log", env)
        run([sys.executable, TRAINER, "train", folders["name"], CONFIGURATION, budget_seconds],
            work / "logs" / "train.log", env)
    return {**folders, "training": json.loads(record_path.read_text())}


def compare(folders: dict, medseg_pred: Path, nnunet_pred: Path) -> dict:
    """Voxel agreement (pooled over the test cases, and the worst case) and the Dice between the two predictions
    per foreground label (pooled), plus each prediction's Dice against the reference labels."""
    from medseg.io import read_image
    from medseg.metrics import Confusion, confusion, dice

    labels = {name: int(v) for name, v in folders["spec"]["labels"].items() if int(v) != 0}
    equal = voxels = 0
    per_case = {}
    empty = Confusion(0, 0, 0, 0)
    pooled = {name: {"medseg_vs_nnunet": empty, "medseg": empty, "nnunet": empty} for name in labels}
    for case in folders["test"]:
        file = case + folders["ending"]
        ours = read_image(medseg_pred / file).array[0]
        theirs = read_image(nnunet_pred / file).array[0]
        reference = read_image(folders["test_labels"] / file).array[0]
        if ours.shape != theirs.shape:
            raise RuntimeError(f"{case}: medseg predicted shape {ours.shape}, nnU-Net {theirs.shape}")
        equal += int((ours == theirs).sum())
        voxels += ours.size
        per_case[case] = float(np.mean(ours == theirs))
        for name, value in labels.items():
            o, t, r = ours == value, theirs == value, reference == value
            counts = pooled[name]  # pooled over the cases, as nnU-Net's own summary pools them
            counts["medseg_vs_nnunet"] += confusion(o, t)
            counts["medseg"] += confusion(o, r)
            counts["nnunet"] += confusion(t, r)

    return {
        "voxel_agreement": equal / voxels, "worst_case_agreement": min(per_case.values()),
        "per_case_agreement": per_case,
        "dice_medseg_vs_nnunet": {n: dice(c["medseg_vs_nnunet"]) for n, c in pooled.items()},
        "dice_vs_reference": {n: {"medseg": dice(c["medseg"]), "nnunet": dice(c["nnunet"])}
                              for n, c in pooled.items()},
        "foreground_voxels": {n: {"medseg": c["medseg"].n_pred, "nnunet": c["nnunet"].n_pred}
                              for n, c in pooled.items()},
    }


def imported_row(work: Path, budget_seconds: float, *, retrain: bool = False, rounds: int = 1) -> dict:
    """Train (or reuse), import, predict the held-out cases with both predictors ``rounds`` times (best time
    kept), compare."""
    folders = train_nnunet(work, budget_seconds, retrain=retrain)
    env = _environment(folders)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    imported = work / "imported"
    import_s = run([BIN / "medseg", "import", "nnunet", folders["model"], "-o", imported, "--folds", "all",
                    "--overwrite"], logs / "import.log")
    seconds: dict[str, list[float]] = {"medseg": [], "nnunet": []}
    outputs = {"medseg": work / "pred_medseg", "nnunet": work / "pred_nnunet"}
    for _ in range(rounds):
        for tool in ("nnunet", "medseg"):
            shutil.rmtree(outputs[tool], ignore_errors=True)
            if tool == "nnunet":
                cmd = [sys.executable, TRAINER, "predict", folders["model"], folders["test_images"], outputs[tool]]
            else:
                cmd = [BIN / "medseg", "predict", "-i", folders["test_images"], "-o", outputs[tool], "-m", imported]
            start = time.perf_counter()
            run(cmd, logs / f"predict_{tool}.log", env)
            seconds[tool].append(time.perf_counter() - start)
    per_case = {tool: min(values) / len(folders["test"]) for tool, values in seconds.items()}
    checks = preprocessing_checks(folders, imported)
    return {
        "dataset": DATASET, "configuration": CONFIGURATION, "fold": "all",
        "train_cases": len(folders["train"]), "test_cases": folders["test"],
        "training": folders["training"], "import_seconds": round(import_s, 2),
        "settings": "step 0.5, Gaussian (sigma patch/8), mirroring over the checkpoint's allowed axes, float32, "
                    "CPU; end to end from files",
        "seconds": seconds, "seconds_per_case": per_case,
        **compare(folders, outputs["medseg"], outputs["nnunet"]), "checks": checks,
    }


def _nnunet_predictor(model: Path):
    """nnU-Net's predictor around the trained model (its network built from the plans as nnU-Net's trainer does;
    the budget trainer's class is not needed for that)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = json.loads((model / "plans.json").read_text())
    dataset = json.loads((model / "dataset.json").read_text())
    manager = PlansManager(plans)
    configuration = manager.get_configuration(CONFIGURATION)
    arch = configuration.network_arch_init_kwargs
    label_manager = manager.get_label_manager(dataset)
    network = get_network_from_plans(configuration.network_arch_class_name, arch,
                                     configuration.network_arch_init_kwargs_req_import,
                                     len(dataset["channel_names"]), label_manager.num_segmentation_heads,
                                     deep_supervision=False)
    checkpoint = torch.load(model / "fold_all" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    network.load_state_dict(checkpoint["network_weights"])  # predict_sliding_window_return_logits does not load them
    network.eval()
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                allow_tqdm=False)
    predictor.manual_initialization(network, manager, configuration, [checkpoint["network_weights"]], dataset,
                                    checkpoint["trainer_name"], checkpoint["inference_allowed_mirroring_axes"])
    return predictor


def preprocessing_checks(folders: dict, imported: Path, cases: int = 2) -> dict:
    """What the held-out cases do not exercise, measured with the same trained model:

    * window aggregation: ``cases`` preprocessed held-out cases side by side along y (several overlapping windows
      per axis; a single case fits in one window) predicted by nnU-Net's sliding window (Gaussian-weighted logits)
      and medseg's (Gaussian-weighted softmax): argmax agreement;
    * resampling: one held-out case, normalised, resampled from 1 mm to 0.75 mm by nnU-Net's
      ``resample_data_or_seg_to_shape`` (skimage, order 3, clipped to the input range) and medseg's
      ``resample_image`` (scipy zoom, order 3): intensity differences, and the agreement of medseg's prediction on
      the two arrays.
    """
    import torch
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape

    from medseg.inference import Predictor
    from medseg.io import read_image
    from medseg.preprocess.pipeline import preprocess_arrays
    from medseg.preprocess.resample import resample_image

    ours = Predictor.from_folder(imported, folds=["all"])
    arrays = []
    for case in folders["test"][:cases]:
        image = read_image(folders["test_images"] / f"{case}_0000{folders['ending']}")
        arrays.append(preprocess_arrays(image.array, None, list(image.spacing), ours.config).data)
    z, x = min(a.shape[1] for a in arrays), min(a.shape[3] for a in arrays)
    long = torch.from_numpy(np.concatenate([a[:, :z, :, :x] for a in arrays], axis=2))
    theirs = _nnunet_predictor(folders["model"])
    with torch.no_grad():
        nnunet_labels = theirs.predict_sliding_window_return_logits(long).argmax(0).numpy()
    medseg_labels = ours.predict_preprocessed(long).argmax(0).numpy()
    data = arrays[0]
    shape = [int(round(s / 0.75)) for s in data.shape[1:]]
    nnunet_resampled = resample_data_or_seg_to_shape(data, shape, [1.0] * 3, [0.75] * 3, is_seg=False, order=3,
                                                     order_z=0, force_separate_z=None).astype(np.float32)
    medseg_resampled = resample_image(data, tuple(shape), order=3)
    difference = np.abs(nnunet_resampled - medseg_resampled)
    labels_on = [ours.predict_preprocessed(torch.from_numpy(a)).argmax(0).numpy()
                 for a in (nnunet_resampled, medseg_resampled)]
    return {
        "window_aggregation": {"shape": list(long.shape[1:]), "patch": ours.patch_size,
                               "agreement": float(np.mean(nnunet_labels == medseg_labels)),
                               "foreground_voxels": {"medseg": int((medseg_labels > 0).sum()),
                                                     "nnunet": int((nnunet_labels > 0).sum())}},
        "resampling_1mm_to_0.75mm": {"case": folders["test"][0], "shape": shape,
                                     "max_abs_difference": float(difference.max()),
                                     "mean_abs_difference": float(difference.mean()),
                                     "intensity_std": float(data.std()),
                                     "prediction_agreement": float(np.mean(labels_on[0] == labels_on[1]))},
    }
