"""Per-voxel uncertainty of a segmentation from several predictions of one image ("members"):

``ensemble``   the cross-validation folds, each a member (each with the predictor's mirroring TTA);
``tta``        the mirrored copies of mirroring TTA, each a member (each averaged over the folds);
``mcdropout``  ``samples`` forward passes with the networks' dropout layers active (Gal & Ghahramani 2016), each
               a member (each averaged over folds and mirrored copies).

Per window, the members' class probabilities ``p_m (K, *patch)`` become ``K + 2`` channels: their mean ``p``,
their mean entropy ``E_m[H(p_m)]`` and their mean sum of squares ``E_m[sum_k p_mk^2]``. These are linear in the
members, so the predictor's own sliding window (Gaussian-weighted average of windows) and restore (linear
resampling to the input grid) carry them like probabilities. On the input grid:

    entropy             H(p) = -sum_k p_k log p_k           (nats, 0 .. log K): total predictive uncertainty
    mutual_information  H(p) - E_m[H(p_m)]                   (>= 0 by Jensen, <= H(p)): members' disagreement
    variance            (E_m[sum_k p_mk^2] - sum_k p_k^2) / K  (>= 0): mean over classes of the members' variance

The label map is the argmax of the members' mean ``p`` (for ``ensemble``, exactly what ``medseg predict``
predicts without ``--uncertainty``). ``write_uncertainty`` writes the three maps (float32 NIfTI on the input's
grid) and a per-structure summary (``structure_summaries``) into ``OUTPUT/uncertainty/``, each file atomically.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medseg.errors import MedsegError
from medseg.inference.calibrated import apply_calibration
from medseg.inference.ensemble import labels_from_probabilities
from medseg.inference.postprocess import keep_largest_component
from medseg.inference.predictor import PRECISIONS, Predictor
from medseg.inference.restore import full_region
from medseg.inference.tta import mirrored, mirrored_copies
from medseg.io import Image

METHODS = ("ensemble", "tta", "mcdropout")
MAPS = ("entropy", "mutual_information", "variance")
SUBFOLDER = "uncertainty"
MAP_SUFFIX = ".nii.gz"
DEFAULT_MC_SAMPLES = 8
SUMMARY_SCHEMA_VERSION = 1
DROPOUT_TYPES = (torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d,
                 torch.nn.AlphaDropout, torch.nn.FeatureAlphaDropout)


def entropy(probabilities: np.ndarray | torch.Tensor, axis: int = 0):
    """``-sum p log p`` along ``axis`` (``0 log 0 = 0``), in nats."""
    if isinstance(probabilities, torch.Tensor):
        return -torch.special.xlogy(probabilities, probabilities).sum(axis)
    p = np.asarray(probabilities, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(axis)


def dropout_layers(network: torch.nn.Module) -> list[torch.nn.Module]:
    """The network's dropout modules with a non-zero probability."""
    return [m for m in network.modules() if isinstance(m, DROPOUT_TYPES) and float(getattr(m, "p", 0)) > 0]


@contextlib.contextmanager
def dropout_active(networks: list[torch.nn.Module]) -> Iterator[None]:
    """Dropout layers in training mode (everything else, e.g. normalisation, stays in eval mode); restored after."""
    layers = [layer for network in networks for layer in dropout_layers(network)]
    modes = [layer.training for layer in layers]
    try:
        for layer in layers:
            layer.train()
        yield
    finally:
        for layer, mode in zip(layers, modes):
            layer.train(mode)


@dataclass
class UncertaintyResult:
    """One image's prediction with its uncertainty, all on the image's grid."""

    labels: Image         # (1, *spatial) label values
    probabilities: Image  # (K, *spatial) members' mean class probabilities
    maps: dict[str, Image]  # MAPS -> (1, *spatial) float32
    method: str
    members: int
    label_values: list[int]  # channel i of probabilities is label_values[i]


class UncertaintyPredictor:
    """A ``Predictor`` whose windows are predicted by several members; see the module docstring.

    Args:
        predictor: the model's ``Predictor`` (``Predictor.from_folder``); its folds, mirroring, calibration,
            precision and post-processing are used.
        method: one of ``METHODS``.
        samples: members of ``mcdropout``.
        seed: seeds the dropout masks of ``mcdropout`` (the global torch generator is restored afterwards).
    """

    def __init__(self, predictor: Predictor, method: str, *, samples: int = DEFAULT_MC_SAMPLES, seed: int = 0):
        if method not in METHODS:
            raise MedsegError(f"unknown uncertainty method {method!r}", fix=f"use one of {', '.join(METHODS)}")
        if method == "ensemble" and len(predictor.networks) < 2:
            raise MedsegError(f"--uncertainty ensemble needs at least two folds, the model is used with "
                              f"{len(predictor.networks)}", fix="train more folds (medseg train -f 1 ...) or pass "
                              "-f 0,1; or use --uncertainty tta / mcdropout")
        if method == "tta" and not predictor.mirror_axes:
            raise MedsegError("--uncertainty tta needs mirroring", fix="leave out --no-tta")
        if method == "mcdropout":
            if samples < 2:
                raise MedsegError(f"--mc-samples {samples}: MC dropout needs at least 2 samples", fix="use e.g. 8")
            if not all(dropout_layers(network) for network in predictor.networks):
                raise MedsegError("the model has no dropout layers, so MC dropout samples would all be equal",
                                  fix="train with dropout (medseg train ... --set net.dropout=0.1) or use "
                                      "--uncertainty ensemble / tta")
        self.predictor, self.method, self.samples, self.seed = predictor, method, int(samples), int(seed)

    @property
    def label_values(self) -> list[int]:
        return self.predictor.label_values

    @property
    def num_members(self) -> int:
        return {"ensemble": len(self.predictor.networks), "tta": 2 ** len(self.predictor.mirror_axes),
                "mcdropout": self.samples}[self.method]

    def check_image(self, image: Image) -> None:
        self.predictor.check_image(image)

    def _softmax(self, logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """Softmax over the class channels only (an instance model's distance channel, after them, is not one)."""
        return torch.softmax(logits.narrow(dim, 0, self.predictor.num_classes).float(), dim)

    def _calibrated(self, probabilities: torch.Tensor, dim: int = 1) -> torch.Tensor:
        spec = self.predictor.calibration
        return probabilities if spec is None else apply_calibration(probabilities, spec, dim)

    def members(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """Each member's class probabilities ``(B, K, *patch)`` for windows ``x`` ``(B, C, *patch)``."""
        p = self.predictor
        axes, chunk = p.mirror_axes, p.max_forward_batch
        autocast = torch.autocast(torch.device(p.device).type, dtype=PRECISIONS[p.precision],
                                  enabled=p.precision != "float32")
        if self.method == "ensemble":
            for network in p.networks:
                with autocast:
                    logits = mirrored(network, axes, max_batch=chunk)(x)
                yield self._calibrated(self._softmax(logits))
        elif self.method == "tta":
            total = None
            for network in p.networks:
                with autocast:
                    copies = mirrored_copies(network, axes, max_batch=chunk)(x)  # (M, B, K, *patch)
                probabilities = self._softmax(copies, 2)
                total = probabilities if total is None else total.add_(probabilities)
            assert total is not None
            for copy in total / len(p.networks):
                yield self._calibrated(copy)
        else:
            with dropout_active(p.networks):
                for _ in range(self.samples):
                    total = None
                    for network in p.networks:
                        with autocast:
                            logits = mirrored(network, axes, max_batch=chunk)(x)
                        probabilities = self._softmax(logits)
                        total = probabilities if total is None else total.add_(probabilities)
                    assert total is not None
                    yield self._calibrated(total / len(p.networks))

    def window_statistics(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, C, *patch)`` -> ``(B, K + 2, *patch)``: members' mean probabilities, mean entropy, mean sum of
        squared probabilities."""
        x, squeeze = self.predictor.network_input(patches)  # a 2d / 2.5d network on a 3D volume
        mean = mean_entropy = mean_squares = None
        count = 0
        with torch.no_grad():
            for probabilities in self.members(x):
                h = entropy(probabilities, 1)[:, None]
                s = probabilities.square().sum(1, keepdim=True)
                if mean is None:
                    mean, mean_entropy, mean_squares = probabilities.clone(), h, s
                else:
                    mean.add_(probabilities), mean_entropy.add_(h), mean_squares.add_(s)
                count += 1
        assert mean is not None and mean_entropy is not None and mean_squares is not None
        statistics = torch.cat([mean, mean_entropy, mean_squares], 1) / count
        return statistics[:, :, None] if squeeze else statistics

    def predict_with_uncertainty(self, image: Image, previous: np.ndarray | None = None) -> UncertaintyResult:
        """Labels, members' mean probabilities and the ``MAPS`` of ``image`` (``(C, *spatial)``)."""
        k = self.predictor.num_classes
        generator_state = torch.random.fork_rng(devices=[]) if self.method == "mcdropout" \
            else contextlib.nullcontext()
        with generator_state:
            torch.manual_seed(self.seed)
            slabs, bbox = self.predictor._probability_slabs(image, previous, window_predict=self.window_statistics)
            statistics = np.zeros((k + 2, *image.spatial_shape), dtype=np.float32)
            statistics[0] = 1.0  # outside the content crop: background, certain
            statistics[k + 1] = 1.0
            for start, slab in slabs:
                statistics[(slice(None), *full_region(bbox, start, slab.shape[1:]))] = slab.numpy()
        probabilities = statistics[:k]
        total = entropy(probabilities).astype(np.float32)
        maps = {"entropy": total,
                "mutual_information": np.clip(total - statistics[k], 0.0, None),  # clip: float rounding only
                "variance": np.clip((statistics[k + 1] - np.square(probabilities).sum(0)) / k, 0.0, None)}
        labels = labels_from_probabilities(probabilities, self.label_values)
        if self.predictor.postprocess_labels:
            labels = keep_largest_component(labels, self.predictor.postprocess_labels)
        return UncertaintyResult(image.with_array(labels[None]), image.with_array(probabilities),
                                 {name: image.with_array(m[None].astype(np.float32)) for name, m in maps.items()},
                                 self.method, self.num_members, list(self.label_values))

    def predict(self, image: Image) -> Image:
        return self.predict_with_uncertainty(image).labels

    def predict_with_probabilities(self, image: Image) -> tuple[Image, Image]:
        result = self.predict_with_uncertainty(image)
        return result.labels, result.probabilities

    # what medseg.inference.run.predict_cases asks of its ``uncertainty`` argument
    def file_names(self, case_id: str) -> list[str]:
        return uncertainty_file_names(case_id)

    def predict_and_write(self, image: Image, output: str | Path, case_id: str) -> tuple[Image, Image]:
        from medseg.atomic import remove_stale_temporaries

        result = self.predict_with_uncertainty(image)
        folder = Path(output) / SUBFOLDER
        remove_stale_temporaries(folder, targets=[Path(name).name for name in uncertainty_file_names(case_id)])
        write_uncertainty(result, folder, case_id)
        return result.labels, result.probabilities


def check_uncertainty_request(method: str, *, models: int = 1, engine: str = "torch") -> None:
    """The ``medseg predict --uncertainty`` checks that need no model loaded: a known method, one model folder,
    the torch engine."""
    if method not in METHODS:
        raise MedsegError(f"--uncertainty {method!r} is not one of {', '.join(METHODS)}",
                          fix="use --uncertainty ensemble, tta or mcdropout")
    if models != 1:
        raise MedsegError(f"--uncertainty takes one model folder, not {models}",
                          fix="pass one -m (its folds are the ensemble of --uncertainty ensemble)")
    if engine != "torch":
        raise MedsegError(f"--uncertainty needs the torch engine, not {engine}", fix="leave out --engine")


def uncertainty_file_names(case_id: str) -> list[str]:
    """The files ``write_uncertainty`` writes, relative to the prediction folder."""
    return [f"{SUBFOLDER}/{case_id}_{name}{MAP_SUFFIX}" for name in MAPS] + [f"{SUBFOLDER}/{case_id}.json"]


def _boundary_band(mask: np.ndarray) -> np.ndarray:
    """Voxels within one voxel of the mask's border, on both sides (dilation minus erosion, full connectivity)."""
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    return ndimage.binary_dilation(mask, structure) & ~ndimage.binary_erosion(mask, structure)


def _mean(values: np.ndarray, where: np.ndarray) -> float | None:
    return float(values[where].mean()) if where.any() else None


def structure_summaries(result: UncertaintyResult) -> dict:
    """Per predicted structure (foreground label value): its voxels and volume (mm^3), mean confidence (the
    members' mean probability of the label) and the mean of each map inside it, on its boundary band (one voxel
    either side) and in its interior; plus the whole image's means. ``None`` where a region is empty."""
    labels = result.labels.array[0]
    maps = {name: image.array[0] for name, image in result.maps.items()}
    probabilities = result.probabilities.array
    voxel_mm3 = float(np.prod(result.labels.spacing))
    structures = {}
    for channel, value in enumerate(result.label_values):
        if value == 0:
            continue
        mask = labels == value
        band = _boundary_band(mask) if mask.any() else mask
        interior = mask & ~band
        entry = {"voxels": int(mask.sum()), "volume_mm3": float(mask.sum() * voxel_mm3),
                 "components": _components(mask), "mean_confidence": _mean(probabilities[channel], mask)}
        for name, values in maps.items():
            entry[f"mean_{name}"] = _mean(values, mask)
            entry[f"boundary_mean_{name}"] = _mean(values, band)
            entry[f"interior_mean_{name}"] = _mean(values, interior)
        structures[str(value)] = entry
    everything = np.ones(labels.shape, dtype=bool)
    return {"schema_version": SUMMARY_SCHEMA_VERSION, "method": result.method, "members": result.members,
            "entropy_bound": math.log(len(probabilities)),
            "image": {f"mean_{name}": _mean(values, everything) for name, values in maps.items()},
            "structures": structures}


def _components(mask: np.ndarray) -> int:
    """Connected pieces of ``mask`` (full connectivity, ``medseg.metrics``' instance convention)."""
    from medseg.metrics.instance import label_instances

    return int(label_instances(mask).max()) if mask.any() else 0


def write_uncertainty(result: UncertaintyResult, folder: str | Path, case_id: str) -> list[Path]:
    """``folder/<case>_<map>.nii.gz`` for each of ``MAPS`` (float32, the image's geometry) and
    ``folder/<case>.json`` (``structure_summaries``), each written atomically; the summary comes last, so a
    summary on disk means its maps are complete."""
    from medseg.config import write_json_atomic
    from medseg.io import write_image

    folder = Path(folder)
    written = [write_image(result.maps[name], folder / f"{case_id}_{name}{MAP_SUFFIX}") for name in MAPS]
    summary = {"case": case_id, **structure_summaries(result)}
    return written + [write_json_atomic(summary, folder / f"{case_id}.json")]
