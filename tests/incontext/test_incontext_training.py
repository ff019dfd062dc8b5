"""Meta-training through the one trainer: tasks from real datasets (labels, regions, three axes, blocks), a
kill and resume that continue the same run, and the support-shuffling test: a model trained for seconds on two
tasks over the same images follows the support labels (swapping them for the other task's changes the mask)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.config.model_folder import read_fold_weights
from medseg.data import open_dataset
from medseg.incontext.session import InContextSession
from medseg.incontext.support import SupportSet
from medseg.incontext.tasks import draw_real_task, load_task_bank
from medseg.incontext.training import (
    incontext_train_config,
    incontext_trainer,
    selected_datasets,
)
from medseg.metrics import confusion, dice
from medseg.nets.incontext_unet import InContextConfig
from medseg.training.checkpoint import load_checkpoint
from tests.conftest import shared_dataset
from tests.incontext.conftest import disc_and_square


def test_tasks_are_labels_regions_and_axes_of_the_training_block():
    hippocampus = load_task_bank([shared_dataset("hippocampus")], max_cases=3, grid=(32, 32), slices_per_axis=2)
    assert set(hippocampus.task_names) == {f"hippocampus/{o}/axis{a}" for o in ("anterior", "posterior")
                                           for a in range(3)}
    assert hippocampus.images.shape[1:] == (32, 32) and float(hippocampus.images.max()) <= 1.0
    assert len(hippocampus) == 3 * 2 * 3 * 2 and set(hippocampus.case) == {0, 1, 2}
    held_out = load_task_bank([shared_dataset("hippocampus")], part="holdout", max_cases=1, grid=(32, 32))
    ids = sorted(case.case_id for case in open_dataset(shared_dataset("hippocampus")).cases)
    train_ids = set(ids[:round(0.8 * len(ids))])  # the first 80 % of the sorted ids
    assert set(hippocampus.case_ids["hippocampus"]) <= train_ids
    assert not train_ids & set(held_out.case_ids["hippocampus"])  # the held-out block is never trained on
    brats = load_task_bank([shared_dataset("brats2013_mini")], max_cases=1, grid=(32, 32), slices_per_axis=1)
    assert {name.split("/")[1] for name in brats.task_names} == {"whole_tumor", "tumor_core", "enhancing_tumor"}
    assert {name.rsplit("/", 1)[1] for name in brats.task_names} == {"ch0", "ch1"}  # FLAIR and T1c


def test_a_real_task_draws_its_support_from_other_cases():
    bank = load_task_bank([shared_dataset("hippocampus")], max_cases=4, grid=(32, 32), slices_per_axis=2)
    images, masks, name = draw_real_task(bank, np.random.default_rng(0), 4)
    assert images.shape == masks.shape == (4, 32, 32) and name.startswith("hippocampus/")
    assert bool((masks.flatten(1) > 0.5).any(1).all())


def test_exclude_leaves_the_dataset_out_and_refuses_a_name_it_does_not_know(tmp_path):
    from medseg.errors import MedsegError

    a, b = shared_dataset("hippocampus"), shared_dataset("isbi2012_em")
    assert selected_datasets([a, b], ["isbi2012_em"]) == [a]
    with pytest.raises(MedsegError, match="matches none"):
        selected_datasets([a, b], ["isbi2012"])


class _KillAfterFirstEpoch:
    def on_epoch_end(self, trainer):
        raise KeyboardInterrupt  # after the checkpoint callback: what a kill between epochs leaves

    def on_train_end(self, trainer):
        pass


def test_a_killed_run_resumes_into_the_run_it_would_have_been(tmp_path, disc_square_bank):
    bank = disc_square_bank(6, 32, seed=0)
    network = InContextConfig(features=[4, 8], grid=[32, 32], stochastic=True)
    config = incontext_train_config(budget_seconds=None, max_iterations=4, validate_every=2, batch_size=2,
                                    max_support=2, candidates=2, validation_tasks=2, validation_support=1,
                                    synthetic_fraction=0.5, threads=1)
    incontext_trainer(bank, tmp_path / "whole", config=config, network_config=network).run(progress=False)
    killed = incontext_trainer(bank, tmp_path / "killed", config=config, network_config=network)
    killed.callbacks.insert(1, _KillAfterFirstEpoch())  # after the checkpoint, before the end
    with pytest.raises(KeyboardInterrupt):
        killed.run(progress=False)
    assert load_checkpoint(tmp_path / "killed" / "fold_all" / "checkpoint.pt")["state"]["iteration"] == 2
    assert not (tmp_path / "killed" / "model.json").exists()
    resumed = incontext_trainer(bank, tmp_path / "killed", config=config, network_config=network)
    assert resumed.resume()
    resumed.run(progress=False)
    assert [h["iteration"] for h in resumed.state.history] == [2, 4]
    whole, again = read_fold_weights(tmp_path / "whole", "all"), read_fold_weights(tmp_path / "killed", "all")
    for name in whole:
        torch.testing.assert_close(again[name], whole[name])
    assert (tmp_path / "killed" / "model.json").is_file()


@pytest.mark.slow  # 120 training steps: seconds on a quiet 2-core machine, minutes under a full load
def test_the_prediction_follows_the_support_labels(tmp_path, disc_square_bank):
    """Two tasks on the same images: with disc labels the model must find discs, with square labels squares."""
    torch.manual_seed(0)
    config = incontext_train_config(budget_seconds=None, max_iterations=120, validate_every=120, batch_size=8,
                                    min_support=2, max_support=3, synthetic_fraction=0.0, learning_rate=3e-3,
                                    validation_tasks=4, validation_support=2, augment_probability=0.0, threads=1)
    trainer = incontext_trainer(disc_square_bank(48, 32, seed=0), tmp_path / "model", config=config,
                                network_config=InContextConfig(features=[8, 16, 32], grid=[32, 32]))
    trainer.run(progress=False)
    session = InContextSession(tmp_path / "model")
    rng = np.random.default_rng(1)
    examples = [disc_and_square(rng, 48) for _ in range(7)]  # another size than the grid: resized both ways
    images = [e[0] for e in examples[:3]]
    disc_support = SupportSet.from_arrays(images, [e[1] for e in examples[:3]])
    square_support = SupportSet.from_arrays(images, [e[2] for e in examples[:3]])
    between, disc_truth, square_truth = [], [], []
    for image, disc, square in examples[3:]:
        with_discs = session.predict(image, disc_support).mask
        with_squares = session.predict(image, square_support).mask
        assert with_discs.shape == image.shape
        between.append(dice(confusion(with_discs, with_squares)))
        disc_truth.append(dice(confusion(with_discs, disc)))
        square_truth.append(dice(confusion(with_squares, square)))
    assert np.mean(between) < 0.5, between
    assert np.mean(disc_truth) > 0.6 and np.mean(square_truth) > 0.6, (disc_truth, square_truth)
