"""Fixtures for the prediction tests: tiny model folders (random, seeded weights) on the synthetic shapes dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def plan_for(dataset: Path):
    from medseg.planning import Budget, compute_fingerprint, plan_dataset

    return plan_dataset(compute_fingerprint(dataset), Budget("cpu", 10**9, 300, 5e9))


def make_model_folder(folder: Path, dataset: Path, configuration: str = "3d_fullres", *, plan=None,
                      folds=("0",), features: list[int] | None = None, seed: int = 0) -> Path:
    """A model folder for ``dataset`` with a small ``PlanUNet`` per fold (weights from ``torch.manual_seed``)."""
    import copy

    from safetensors.torch import save_file

    from medseg.data import open_dataset
    from medseg.nets.plan_unet import PlanUNet
    from medseg.config.model_folder import ModelSpec, plan_network_spec, write_segmentation_model

    plan = copy.deepcopy(plan) if plan is not None else plan_for(dataset)
    config = plan.configurations[configuration]
    network = dict(config.network)
    if features is not None:
        network["features_per_stage"] = features[: len(network["features_per_stage"])]
    network["deep_supervision"] = False
    config.network = network
    spec = open_dataset(dataset).spec
    labels = sorted(v for v in spec.labels.values() if isinstance(v, int))
    write_segmentation_model(folder, ModelSpec("segmentation", plan_network_spec(network), labels, configuration),
                             plan, spec)
    for index, fold in enumerate(folds):
        torch.manual_seed(seed + index)
        net = PlanUNet.from_config(network)
        (folder / f"fold_{fold}").mkdir(parents=True, exist_ok=True)
        save_file(net.state_dict(), str(folder / f"fold_{fold}" / "weights.safetensors"))
    return folder


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory) -> Path:
    from medseg.synth.shapes import write_shapes_dataset

    return write_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", num_cases=3)


@pytest.fixture(scope="session")
def shapes_plan(shapes_dataset):
    return plan_for(shapes_dataset)


@pytest.fixture(scope="session")
def shapes_model(tmp_path_factory, shapes_dataset, shapes_plan) -> Path:
    return make_model_folder(tmp_path_factory.mktemp("models") / "shapes_3d", shapes_dataset, plan=shapes_plan,
                             folds=("0", "1"), features=[4, 8, 16, 16])


@pytest.fixture(scope="session")
def shapes_model_2d(tmp_path_factory, shapes_dataset, shapes_plan) -> Path:
    return make_model_folder(tmp_path_factory.mktemp("models") / "shapes_2d", shapes_dataset, "2d", plan=shapes_plan,
                             features=[4, 8, 16, 16, 16])


@pytest.fixture(scope="session")
def model_factory():
    """``make_model_folder`` for tests that build their own dataset."""
    return make_model_folder
