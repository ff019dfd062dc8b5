"""Per-case feature vectors for dataset-shift checks: radiomics-style intensity and texture features of the image
(scipy statistics + scikit-image's grey-level co-occurrence matrix), or a trained network's encoder features.

pyradiomics would be the reference library for the first set, but it does not install here (3.1.0's sdist
reports version 3.0.1a1 and pip discards it; 3.0.1's setup.py imports numpy without declaring it as a build
requirement), so the texture set is computed with scikit-image, already a core dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from medseg.errors import MedsegError

FEATURE_SETS = ("texture", "encoder")
GLCM_LEVELS = 32
GLCM_DISTANCES = (1, 3)
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
GLCM_PROPERTIES = ("contrast", "dissimilarity", "homogeneity", "ASM", "correlation", "entropy")
GLCM_SLICES = 16  # a 3D volume's GLCM is summed over at most this many evenly spaced slices along axis 0
FIRST_ORDER = ("mean", "std", "p10", "p50", "p90", "iqr", "skewness", "kurtosis", "histogram_entropy")
GRADIENT = ("gradient_mean", "gradient_std")
TEXTURE_FEATURE_NAMES = (list(FIRST_ORDER) + list(GRADIENT)
                         + [f"glcm_{p}_d{d}" for d in GLCM_DISTANCES for p in GLCM_PROPERTIES])


@dataclass
class FeatureTable:
    """One feature vector per case: ``values`` ``(N, F)`` float64, row ``i`` belongs to ``case_ids[i]``."""

    case_ids: list[str]
    names: list[str]
    values: np.ndarray
    feature_set: str


def grey_intensities(image: np.ndarray) -> np.ndarray:
    """``(C, *spatial)`` -> ``(*spatial)`` float64: the mean over channels (an RGB image's brightness, a
    multi-channel MRI's average contrast), so that datasets with different channels share one feature space."""
    image = np.asarray(image, dtype=np.float64)
    return image.mean(axis=0)


def _first_order(grey: np.ndarray) -> list[float]:
    from scipy import stats

    values = grey.ravel()
    p01, p10, p50, p90, p99 = np.percentile(values, [1, 10, 50, 90, 99])
    p25, p75 = np.percentile(values, [25, 75])
    std = float(values.std())
    skewness = float(stats.skew(values)) if std > 0 else 0.0
    kurtosis = float(stats.kurtosis(values)) if std > 0 else 0.0
    counts, _ = np.histogram(values, bins=64, range=(p01, p99 if p99 > p01 else p01 + 1))
    entropy = float(stats.entropy(counts + 0.0, base=2)) if counts.sum() else 0.0
    return [float(values.mean()), std, p10, p50, p90, p75 - p25, skewness, kurtosis, entropy]


def _gradient(grey: np.ndarray) -> list[float]:
    magnitude = np.sqrt(sum(g ** 2 for g in np.gradient(grey)))
    return [float(magnitude.mean()), float(magnitude.std())]


def quantise(grey: np.ndarray, levels: int = GLCM_LEVELS) -> np.ndarray:
    """``(*spatial)`` -> uint8 grey levels ``0 .. levels-1`` between the image's own 1st and 99th percentiles (the
    texture features then do not depend on the intensity scale; the first-order ones carry it)."""
    low, high = np.percentile(grey, [1, 99])
    scaled = (grey - low) / max(high - low, 1e-12)
    return np.clip(np.floor(scaled * levels), 0, levels - 1).astype(np.uint8)


def _glcm(grey: np.ndarray) -> list[float]:
    from skimage.feature import graycomatrix, graycoprops

    levels = quantise(grey)
    planes = [levels] if levels.ndim == 2 else [
        levels[i] for i in np.unique(np.linspace(0, levels.shape[0] - 1, GLCM_SLICES).round().astype(int))]
    counts = sum(graycomatrix(p, GLCM_DISTANCES, GLCM_ANGLES, levels=GLCM_LEVELS, symmetric=True).astype(np.float64)
                 for p in planes)
    totals = counts.sum(axis=(0, 1), keepdims=True)
    matrix = counts / np.where(totals > 0, totals, 1)
    # (levels, levels, distances, angles) -> per property (distances, angles), averaged over the angles
    return [float(graycoprops(matrix, p)[d].mean()) for d in range(len(GLCM_DISTANCES)) for p in GLCM_PROPERTIES]


def texture_features(image: np.ndarray) -> np.ndarray:
    """``(C, *spatial)`` (2D or 3D) -> ``(F,)`` float64 in the order of ``TEXTURE_FEATURE_NAMES``: first-order
    statistics of all voxels, gradient magnitude, and GLCM properties (32 levels, distances 1 and 3 voxels, four
    in-plane angles averaged; a volume's co-occurrences summed over up to 16 slices)."""
    grey = grey_intensities(image)
    if grey.ndim not in (2, 3):
        raise MedsegError(f"an image of {grey.ndim} spatial dimensions", fix="pass 2D or 3D images")
    return np.array(_first_order(grey) + _gradient(grey) + _glcm(grey), dtype=np.float64)


def _tiles(data: np.ndarray, patch: Sequence[int]) -> np.ndarray:
    """``(C, *S)`` -> ``(T, C, *patch)``: non-overlapping windows covering ``S`` (zero-padded where ``S`` is smaller
    than the patch, the last window of an axis aligned to its end)."""
    pad = [(0, 0)] + [(0, max(p - s, 0)) for s, p in zip(data.shape[1:], patch)]
    data = np.pad(data, pad)
    starts = [sorted({*range(0, s - p + 1, p), s - p}) for s, p in zip(data.shape[1:], patch)]
    grid = np.meshgrid(*starts, indexing="ij")
    corners = np.stack([g.ravel() for g in grid], axis=1)
    return np.stack([data[(slice(None), *[slice(c, c + p) for c, p in zip(corner, patch)])] for corner in corners])


def encoder_features(network, config, image: np.ndarray, spacing: Sequence[float], *, batch_size: int = 4
                     ) -> np.ndarray:
    """The network's deepest encoder stage, averaged over space and over patch-sized windows of the image
    preprocessed as in training: ``image`` ``(C, *spatial)`` -> ``(features of the last stage,)`` float64. A 2d
    network on a volume sees up to 16 evenly spaced slices."""
    import torch

    from medseg.preprocess.pipeline import preprocess_arrays

    encoder = getattr(network, "encoder", None)
    if not isinstance(encoder, torch.nn.ModuleList) or len(encoder) == 0:
        raise MedsegError(f"the network {type(network).__name__} has no encoder stages to take features from",
                          fix="use --features texture, or a model of the plan U-Net")
    data = preprocess_arrays(np.asarray(image, dtype=np.float32), None, list(spacing), config).data
    patch = [int(p) for p in config.patch_size]
    if data.ndim - 1 > len(patch):  # 2d network, 3D volume: slices become the windows' source images
        index = np.unique(np.linspace(0, data.shape[1] - 1, GLCM_SLICES).round().astype(int))
        windows = np.concatenate([_tiles(data[:, i], patch) for i in index])
    else:
        windows = _tiles(data, patch)
    pooled = []
    captured: list[torch.Tensor] = []
    hook = encoder[-1].register_forward_hook(lambda module, inputs, output: captured.append(output))
    try:
        with torch.no_grad():
            for start in range(0, len(windows), batch_size):
                captured.clear()
                network(torch.from_numpy(np.ascontiguousarray(windows[start:start + batch_size])))
                pooled.append(captured[0].flatten(2).mean(2).double())
    finally:
        hook.remove()
    return torch.cat(pooled).mean(0).numpy()


def dataset_features(root: str | Path, *, feature_set: str = "texture", model: str | Path | None = None,
                     cases: Sequence[str] | None = None, intensity_shift: float = 0.0,
                     progress: bool | None = None) -> FeatureTable:
    """Feature vectors of a dataset's training cases (or of ``cases``), read with ``medseg.data``.

    ``feature_set``: ``"texture"`` (``texture_features``) or ``"encoder"`` (``encoder_features`` of ``model``'s
    first fold). ``intensity_shift``: added to every image (in units of that image's own standard deviation)
    before the features, to build a shifted copy of a dataset.
    """
    from medseg.data import open_dataset
    from medseg.progress import track

    if feature_set not in FEATURE_SETS:
        raise MedsegError(f"unknown feature set {feature_set!r}", fix=f"use one of {', '.join(FEATURE_SETS)}")
    dataset = open_dataset(root).require_cases()
    chosen = [dataset.case(c) for c in cases] if cases is not None else dataset.cases
    extract = case_feature_function(feature_set, model)
    rows, names = [], None
    for case in track(chosen, f"features of {Path(root).name}", enabled=progress):
        image = dataset.read_image(case)
        array = np.asarray(image.array, dtype=np.float64)
        if intensity_shift:
            array = array + intensity_shift * array.std()
        values, names = extract(array, list(image.spacing))
        rows.append(values)
    return FeatureTable([c.case_id for c in chosen], list(names or []), np.stack(rows), feature_set)


def case_feature_function(feature_set: str, model: str | Path | None = None):
    """``f(image (C, *spatial), spacing) -> (values (F,), names)`` for ``feature_set``; ``"encoder"`` loads
    ``model``'s first fold once."""
    if feature_set == "texture":
        return lambda array, spacing: (texture_features(array), TEXTURE_FEATURE_NAMES)
    if feature_set != "encoder":
        raise MedsegError(f"unknown feature set {feature_set!r}", fix=f"use one of {', '.join(FEATURE_SETS)}")
    if model is None:
        raise MedsegError("encoder features need a model folder", fix="pass --model MODEL, or --features texture")
    from medseg.config.model_folder import available_folds, read_segmentation_model
    from medseg.nets.from_folder import load_network

    spec, plan, _ = read_segmentation_model(model)
    folds = available_folds(model)
    if not folds:
        raise MedsegError("no fold has weights", path=model, fix="train at least one fold first")
    network = load_network(model, folds[0], spec=spec)
    config = plan.configurations[spec.configuration]

    def extract(array: np.ndarray, spacing: list[float]) -> tuple[np.ndarray, list[str]]:
        if array.shape[0] != spec.network.in_channels:
            raise MedsegError(f"an image of {array.shape[0]} channel(s) for a model of {spec.network.in_channels}",
                              path=model, fix="encoder features compare datasets with the model's channels; "
                              "use --features texture across modalities")
        values = encoder_features(network, config, array, spacing)
        return values, [f"encoder_{i}" for i in range(len(values))]

    return extract
