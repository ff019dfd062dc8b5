"""The plan's step timing takes its batches from the real loader, and a batch's wait is part of the step."""

from __future__ import annotations

import time
import torch

from medseg.planning import timing_batches as timing


def test_timing_batches_are_the_loaders_augmented_batches_and_leave_nothing_behind() -> None:
    with timing.timing_case([24, 20], 3, 4) as folder:
        from_worker = list(timing.timing_batches(folder, [24, 20], 2, num_workers=1, num_batches=3))
        in_process = list(timing.timing_batches(folder, [24, 20], 2, num_workers=0, num_batches=3))
        raw = timing.np.load(folder / f"{timing.TIMING_CASE}.npy")
    assert len(from_worker) == 3 and not folder.exists()
    for batch in from_worker:
        assert batch["image"].shape == (2, 3, 24, 20) and batch["image"].dtype == torch.float32
        assert batch["label"].shape == (2, 1, 24, 20) and batch["label"].dtype == torch.int8
        assert 0 <= int(batch["label"].min()) and int(batch["label"].max()) < 4
    for a, b in zip(from_worker, in_process):  # the loader's batches do not depend on the worker count
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert raw.shape == (3, 36, 30)
    # augmented, not plain crops: no batch is a box of the case
    first = from_worker[0]["image"][0].numpy()
    assert not any((raw[:, y:y + 24, x:x + 20] == first).all() for y in range(13) for x in range(11))


def test_a_batch_that_keeps_the_step_waiting_is_counted_in_the_step(monkeypatch) -> None:
    from medseg.planning import budget

    network = dict(spatial_dims=2, in_channels=1, num_classes=2, features_per_stage=[4, 8],
                   kernel_sizes=[[3, 3]] * 2, strides=[[1, 1], [2, 2]])
    fast = budget.measure_step_seconds(network, [16, 16], 2, "cpu", seconds=0.3)
    wait = 0.15

    def slow_batches(folder, patch_size, batch_size, *, num_workers, num_batches, seed=0):
        for _ in range(num_batches):
            time.sleep(wait)
            yield {"image": torch.randn(batch_size, 1, *patch_size),
                   "label": torch.randint(0, 2, (batch_size, 1, *patch_size), dtype=torch.int8)}

    monkeypatch.setattr(timing, "timing_batches", slow_batches)
    slow = budget.measure_step_seconds(network, [16, 16], 2, "cpu", seconds=0.3)
    assert slow >= wait * (1 + budget.EPOCH_OVERHEAD) > fast
