"""nnU-Net v2 under a wall-clock training budget, for ``bench/pipeline.py`` (run as a subprocess; medseg never
imports it).

``nnUNetTrainerBudget`` is ``nnUNetTrainer`` with default settings (1000 planned epochs of 250 steps, poly LR per
epoch, 50 validation steps per epoch, fold ``all``) whose loop stops when ``budget_seconds`` of training are spent:
the clock starts after ``on_train_start`` (network, data loaders; preprocessing ran before, outside the budget) and
is checked after every training step. A step that ends past the budget ends training at once (that epoch's
validation is skipped); an epoch whose steps fit but whose validation runs past the budget ends after it. The final
weights go to ``checkpoint_final.pth`` as usual; the steps done, epochs and seconds to ``budget_run.json``.

``schedule``: ``epochs`` (nnU-Net's default: its poly learning rate per epoch over its 1000 planned epochs, so a
budget ends it almost undecayed) or ``budget`` (the same poly rule, ``lr0 * (1 - f) ** 0.9``, with ``f`` the
fraction of the budget spent, set before every step, so it too ends fully decayed, as medseg's schedule does).

nnU-Net finds trainers by class name inside its own package only, so this module runs the trainer itself
(``train``) and predicts with a predictor that resolves this class by name (``predict``); the installed
nnunetv2 files are not touched. Both set ``torch.set_num_threads(cpu_count)`` as nnU-Net's own CLI does on a CPU.

    python bench/nnunet_budget_trainer.py train DATASET_NAME CONFIGURATION BUDGET_SECONDS [epochs|budget]
    python bench/nnunet_budget_trainer.py predict MODEL_FOLDER INPUT_FOLDER OUTPUT_FOLDER

(``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` come from the environment, as nnU-Net requires.)
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from pathlib import Path

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerBudget(nnUNetTrainer):
    """``nnUNetTrainer`` whose training loop ends when ``budget_seconds`` of wall-clock time are spent."""

    budget_seconds: float = float("inf")
    schedule: str = "epochs"

    def _spent(self) -> bool:
        return time.perf_counter() - self._budget_start >= self.budget_seconds

    def _budget_learning_rate(self) -> None:
        """``schedule == "budget"``: nnU-Net's poly rule driven by the fraction of the budget spent."""
        if self.schedule != "budget":
            return
        fraction = min(1.0, (time.perf_counter() - self._budget_start) / self.budget_seconds)
        for group in self.optimizer.param_groups:
            group["lr"] = self.initial_lr * (1 - fraction) ** 0.9

    def run_training(self) -> None:
        setup_start = time.perf_counter()
        self.on_train_start()
        self._budget_start = time.perf_counter()
        steps, epochs, cut_mid_epoch = 0, 0, False
        for _ in range(self.current_epoch, self.num_epochs):
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = []
            for _ in range(self.num_iterations_per_epoch):
                self._budget_learning_rate()
                train_outputs.append(self.train_step(next(self.dataloader_train)))
                steps += 1
                if self._spent():
                    break
            self.on_train_epoch_end(train_outputs)
            if len(train_outputs) < self.num_iterations_per_epoch:
                cut_mid_epoch = True
                self.current_epoch += 1  # as on_epoch_end would; on_train_end saves epoch - 1
                break
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [self.validation_step(next(self.dataloader_val))
                               for _ in range(self.num_val_iterations_per_epoch)]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
            epochs += 1
            if self._spent():
                break
        train_seconds = time.perf_counter() - self._budget_start
        lr = self.optimizer.param_groups[0]["lr"]
        self.on_train_end()
        record = {"steps": steps, "epochs_completed": epochs, "cut_mid_epoch": cut_mid_epoch,
                  "train_seconds": round(train_seconds, 2),
                  "setup_seconds": round(self._budget_start - setup_start, 2),
                  "budget_seconds": self.budget_seconds, "planned_epochs": self.num_epochs,
                  "iterations_per_epoch": self.num_iterations_per_epoch, "final_lr": lr,
                  "initial_lr": self.initial_lr, "schedule": self.schedule, "batch_size": self.batch_size,
                  "patch_size": list(self.configuration_manager.patch_size)}
        (Path(self.output_folder) / "budget_run.json").write_text(json.dumps(record, indent=1))


def train(dataset_name: str, configuration: str, budget_seconds: float, schedule: str = "epochs") -> None:
    """Train fold ``all`` of ``configuration`` on the CPU (``run_training``'s path without the final validation)."""
    from nnunetv2.run.run_training import get_trainer_from_args
    import nnunetv2.run.run_training as run_module

    torch.set_num_threads(multiprocessing.cpu_count())
    run_module.recursive_find_trainer_class_by_name = lambda name, *a, **k: nnUNetTrainerBudget
    trainer = get_trainer_from_args(dataset_name, configuration, "all", "nnUNetTrainerBudget",
                                    device=torch.device("cpu"))
    if schedule not in ("epochs", "budget"):
        raise SystemExit(f"unknown schedule {schedule!r}: epochs or budget")
    trainer.budget_seconds, trainer.schedule = budget_seconds, schedule
    trainer.run_training()


def predict(model_folder: str, input_folder: str, output_folder: str) -> None:
    """``nnUNetv2_predict`` defaults (step 0.5, Gaussian, mirroring TTA, checkpoint_final, 3+3 processes) on the CPU."""
    import nnunetv2.inference.predict_from_raw_data as predict_module
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    torch.set_num_threads(multiprocessing.cpu_count())
    predict_module.recursive_find_trainer_class_by_name = (
        lambda name, *a, **k: nnUNetTrainerBudget if name == "nnUNetTrainerBudget"
        else recursive_find_trainer_class_by_name(name, *a, **k))
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_folder, use_folds=("all",),
                                                   checkpoint_name="checkpoint_final.pth")
    predictor.predict_from_files(input_folder, output_folder, save_probabilities=False, overwrite=True,
                                 num_processes_preprocessing=3, num_processes_segmentation_export=3)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "train":
        train(args[0], args[1], float(args[2]), *args[3:4])
    elif command == "predict":
        predict(*args)
    else:
        raise SystemExit(f"unknown command {command!r}: train or predict")
