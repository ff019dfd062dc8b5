"""Classical baselines behind the Segmenter protocol: seeds from prompts, synthetic images, real polyps (CVC-ClinicDB),
the automatic reference and the registry."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from skimage.draw import disk

from medseg.errors import MedsegError
from medseg.interactive.baselines import (BACKGROUND, BASELINES, OBJECT, AutomaticSegmenter, create_baseline,
                                          normalise, seed_labels)
from medseg.interactive.evaluate import evaluate_interactive
from medseg.interactive.prompts import Box, Click, PromptSet
from medseg.interactive.segmenter import Segmenter
from medseg.io import Image
from medseg.metrics import confusion, dice
from tests.conftest import shared_dataset

SHAPE = (64, 64)


def bright_disc(channels: int) -> tuple[np.ndarray, np.ndarray]:
    """A disc of intensity 200 on 50, Gaussian noise sd 10; ``(C, 64, 64)`` image and its ``(64, 64)`` truth."""
    truth = np.zeros(SHAPE, bool)
    truth[disk((30, 34), 14)] = True
    noise = np.random.default_rng(0).normal(0, 10, (channels, *SHAPE))
    return (np.where(truth, 200.0, 50.0) + noise).astype(np.float32), truth


def test_seeds_with_a_box_without_a_box_and_negative_overrides() -> None:
    with_box = seed_labels(PromptSet([Box((10, 12), (50, 52))]), SHAPE)
    assert (with_box[:10] == BACKGROUND).all() and (with_box[:, 53:] == BACKGROUND).all()
    assert with_box[30, 32] == OBJECT and with_box[15, 15] == 0
    clicks = seed_labels(PromptSet([Click((30, 30)), Click((40, 40), positive=False)]), SHAPE)
    assert clicks[30, 30] == OBJECT and clicks[40, 40] == BACKGROUND
    assert (clicks[0] == BACKGROUND).all() and (clicks[:, -1] == BACKGROUND).all()  # the border stays background
    overlap = seed_labels(PromptSet([Click((30, 30)), Click((30, 30), positive=False)]), SHAPE)
    assert overlap[30, 30] == BACKGROUND
    refuted = seed_labels(PromptSet([Box((10, 12), (50, 52)), Click((30, 32), positive=False)]), SHAPE)
    assert not (refuted == OBJECT).any()  # a negative click on the box centre removes the centre seed


def test_normalise_is_robust_to_outliers() -> None:
    image = np.random.default_rng(0).uniform(0, 1, (2, 32, 32)).astype(np.float32)
    image[:, 0, 0] = 1e6
    out = normalise(image)
    assert out.shape == (32, 32, 2) and out.min() >= 0 and out.max() <= 1
    assert out[..., 0].mean() == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("channels", [1, 3])
def test_baseline_segments_a_bright_disc_from_one_click(name: str, channels: int) -> None:
    image, truth = bright_disc(channels)
    segmenter = create_baseline(name)
    assert isinstance(segmenter, Segmenter) and segmenter.name == name
    embedding = segmenter.embed(image)
    probability = segmenter.predict(embedding, PromptSet([Click((30.0, 34.0))]))
    assert probability.shape == SHAPE and probability.dtype == np.float32
    assert probability.min() >= 0 and probability.max() <= 1
    assert dice(confusion(probability >= 0.5, truth)) > 0.9
    boxed = segmenter.predict(embedding, PromptSet([Box((15, 19), (44, 48))]))
    assert dice(confusion(boxed >= 0.5, truth)) > 0.9


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_no_object_seed_gives_an_empty_mask(name: str) -> None:
    image, _ = bright_disc(1)
    segmenter = create_baseline(name)
    empty = segmenter.predict(segmenter.embed(image), PromptSet([Click((5.0, 5.0), positive=False)]))
    assert not empty.any()


def polyps(ids=(0, 100, 200)):
    from medseg.data import open_dataset

    dataset = open_dataset(shared_dataset("cvc_clinicdb"))
    for index in ids:
        case = dataset.cases[index]
        yield case.case_id, dataset.read_image(case).array, dataset.read_label(case).array[0] > 0


# Dice after 5 box+clicks interactions measured on cases 0, 100, 200 (seed 0): random walker 0.94 / 0.83 / 0.86,
# watershed 0.97 / 0.93 / 0.94, GrabCut 0.97 / 0.97 / 0.84. The bounds leave room for library versions.
@pytest.mark.parametrize("name,bound", [("random_walker", 0.7), ("watershed", 0.85), ("grabcut", 0.75)])
def test_baselines_on_real_polyps_with_a_box_and_clicks(name: str, bound: float) -> None:
    result = evaluate_interactive({name: create_baseline(name)}, polyps(), modes=["box+clicks"], max_interactions=5,
                                  seed=0)
    at5 = [case.dice[4] for case in result.cases]
    assert len(at5) == 3 and min(at5) > bound, at5
    assert all(case.dice[4] > case.dice[0] - 0.05 for case in result.cases)  # corrections help, not hurt


@pytest.mark.slow
def test_random_walker_on_real_polyps_with_clicks_only() -> None:
    # measured: Dice@5 0.93 / 0.66 / 0.69 (mean 0.76); about 0.6 s per interaction at 256 x 256
    result = evaluate_interactive({"rw": create_baseline("random_walker")}, polyps(), modes=["clicks"],
                                  max_interactions=5, seed=0)
    assert np.mean([case.dice[4] for case in result.cases]) > 0.65


class FakePredictor:
    """Stands in for ``medseg.inference.Predictor``: labels 1 left of column 20, 2 right of column 40."""

    def __init__(self):
        self.calls = 0

    def predict(self, image: Image) -> Image:
        self.calls += 1
        labels = np.zeros(image.spatial_shape, np.uint8)
        labels[:, :20], labels[:, 40:] = 1, 2
        return image.with_array(labels[None])


def test_automatic_reference_ignores_prompts_and_runs_the_model_once() -> None:
    predictor = FakePredictor()
    image = np.zeros((3, 32, 64), np.float32)
    every = AutomaticSegmenter(predictor)
    embedding = every.embed(image)
    first = every.predict(embedding, PromptSet([Click((5.0, 30.0))]))
    again = every.predict(embedding, PromptSet([Click((5.0, 30.0)), Box((0, 0), (10, 10))]), first)
    assert predictor.calls == 1
    assert np.array_equal(first, again) and first.dtype == np.float32
    assert first[:, :20].all() and not first[:, 20:40].any() and first[:, 40:].all()
    only_two = AutomaticSegmenter(predictor, label=2)
    assert only_two.predict(only_two.embed(image), PromptSet()).sum() == 32 * 24


def test_registry_and_user_errors(tmp_path, monkeypatch) -> None:
    with pytest.raises(MedsegError, match="random_walker, watershed, grabcut"):
        create_baseline("snake")
    assert create_baseline("random_walker", beta=None).beta == 130.0  # None keeps the default
    with pytest.raises(MedsegError, match="model folder not found"):
        AutomaticSegmenter.from_folder(tmp_path / "missing")
    monkeypatch.setitem(sys.modules, "cv2", None)  # OpenCV absent
    with pytest.raises(MedsegError, match="pip install opencv-python-headless"):
        create_baseline("grabcut").embed(np.zeros((3, 8, 8), np.float32))
