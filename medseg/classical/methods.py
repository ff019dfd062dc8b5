"""The classical automatic segmentation methods: each turns one image into a partition of its voxels into ``n``
regions ranked by brightness (``ranks`` ``(*S)`` int, 0 the darkest), which ``medseg.classical.model`` maps to the
dataset's labels.

Every method takes the normalised image ``(C, *S)`` float32 in [0, 1] (``medseg.classical.features.normalise``),
its ``content`` mask (``features.content_mask``: thresholds, clusters and seeds come from the voxels inside it, the
voxels outside are rank 0; None: every voxel) and its keyword parameters; the scalar methods work on one channel
(``channel``), the clustering ones on all. The libraries do the work: scikit-image (Otsu, multi-Otsu, watershed,
random walker, morphological Chan-Vese), scikit-learn (k-means, Gaussian mixtures), PyMaxflow (the min-cut of the
graph cut). The slow ones (random walker, Chan-Vese, graph cut) run on a grid coarsened to at most ``max_voxels``
voxels and are brought back to the full grid (``features.on_coarse_grid``).
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
from scipy import ndimage

from medseg.classical.features import on_coarse_grid, rank_by_mean, sample_voxels, smoothed
from medseg.errors import MedsegError

RankFn = Callable[..., np.ndarray]


def otsu(image: np.ndarray, *, content: np.ndarray | None = None, channel: int = 0, sigma: float = 0.0
         ) -> np.ndarray:
    """Two ranks: above / below Otsu's threshold (``skimage.filters.threshold_otsu``) of the content voxels."""
    from skimage.filters import threshold_otsu

    scalar = smoothed(image[channel], sigma)
    inside = _inside(scalar, content)
    if np.ptp(inside) == 0:
        return np.zeros(scalar.shape, np.int32)
    return _outside_is_rank_0((scalar > threshold_otsu(inside)).astype(np.int32), content)


def multi_otsu(image: np.ndarray, *, content: np.ndarray | None = None, classes: int = 3, channel: int = 0,
               sigma: float = 0.0) -> np.ndarray:
    """``classes`` ranks between multi-Otsu's thresholds (``skimage.filters.threshold_multiotsu``) of the content
    voxels."""
    scalar = smoothed(image[channel], sigma)
    return _outside_is_rank_0(np.digitize(scalar, _thresholds(_inside(scalar, content), classes)).astype(np.int32),
                              content)


def kmeans(image: np.ndarray, *, content: np.ndarray | None = None, clusters: int = 3, sigma: float = 0.0,
           seed: int = 0) -> np.ndarray:
    """``clusters`` ranks from k-means (``sklearn.cluster.KMeans``) on the voxels' channel values, fitted on a
    seeded sample of at most 50k voxels; ranked by the clusters' mean brightness."""
    KMeans = _optional("sklearn.cluster", "scikit-learn").KMeans
    features = _voxel_features(image, sigma)
    model = KMeans(n_clusters=clusters, n_init=3, random_state=seed).fit(_content_sample(features, content, seed))
    return _outside_is_rank_0(rank_by_mean(model.predict(features).reshape(image.shape[1:]), image), content)


def gmm(image: np.ndarray, *, content: np.ndarray | None = None, components: int = 3, sigma: float = 0.0,
        seed: int = 0) -> np.ndarray:
    """``components`` ranks from a Gaussian mixture (``sklearn.mixture.GaussianMixture``, full covariances) on the
    voxels' channel values, fitted on a seeded sample of at most 50k voxels; ranked by mean brightness."""
    GaussianMixture = _optional("sklearn.mixture", "scikit-learn").GaussianMixture
    features = _voxel_features(image, sigma)
    model = GaussianMixture(n_components=components, covariance_type="full", random_state=seed,
                            reg_covar=1e-4).fit(_content_sample(features, content, seed))
    return _outside_is_rank_0(rank_by_mean(model.predict(features).reshape(image.shape[1:]), image), content)


def chan_vese(image: np.ndarray, *, content: np.ndarray | None = None,
              channel: int = 0, sigma: float = 0.0, smoothing: int = 1,
              iterations: int = 30, max_voxels: int = 250_000) -> np.ndarray:
    """Two ranks from the morphological Chan-Vese active contour without edges
    (``skimage.segmentation.morphological_chan_vese``, any dimension; checkerboard start)."""
    from skimage.segmentation import morphological_chan_vese

    scalar = smoothed(image[channel], sigma)

    def contour(coarse: np.ndarray) -> np.ndarray:
        return morphological_chan_vese(coarse, num_iter=iterations, init_level_set="checkerboard",
                                       smoothing=smoothing).astype(np.float32)

    inside = on_coarse_grid(contour, scalar, max_voxels) > 0.5
    return _outside_is_rank_0(rank_by_mean(inside.astype(np.int32), image[channel:channel + 1]), content)


def _rank_markers(scalar: np.ndarray, classes: int, erosion: int, content: np.ndarray | None = None) -> np.ndarray:
    """Markers ``(*S)`` int32: 0 unknown, ``k + 1`` the confident core of multi-Otsu's rank ``k`` (thresholds of
    the content voxels; the rank's voxels eroded ``erosion`` times; a rank that erodes away keeps its voxels
    farthest from its edge); voxels outside the content are rank 0's."""
    inside = _inside(scalar, content)
    if np.ptp(inside) == 0:
        return np.ones(scalar.shape, np.int32)
    ranks = _outside_is_rank_0(np.digitize(scalar, _thresholds(inside, classes)), content)
    markers = np.zeros(scalar.shape, np.int32)
    for rank in range(classes):
        region = ranks == rank
        core = ndimage.binary_erosion(region, iterations=erosion) if erosion else region
        if region.any() and not core.any():
            distance = ndimage.distance_transform_edt(region)
            core = distance >= distance.max()
        markers[core] = rank + 1
    return markers


def watershed(image: np.ndarray, *, content: np.ndarray | None = None,
              classes: int = 2, channel: int = 0, sigma: float = 1.0,
              erosion: int = 2) -> np.ndarray:
    """``classes`` ranks from marker-controlled watershed (``skimage.segmentation.watershed``) on the Sobel
    gradient magnitude, flooded from the eroded cores of the multi-Otsu ranks."""
    from skimage.filters import sobel
    from skimage.segmentation import watershed as flood

    scalar = smoothed(image[channel], sigma)
    return (flood(sobel(scalar), _rank_markers(scalar, classes, erosion, content)) - 1).astype(np.int32)


def random_walker(image: np.ndarray, *, content: np.ndarray | None = None,
                  classes: int = 2, channel: int = 0, sigma: float = 0.0,
                  beta: float = 130.0, erosion: int = 2, max_voxels: int | None = None) -> np.ndarray:
    """``classes`` ranks from the random walker (``skimage.segmentation.random_walker``, Grady 2006) seeded by
    the eroded cores of the multi-Otsu ranks, on a grid of at most ``max_voxels`` voxels (default 256 x 256 in 2D,
    where the linear system is solved directly, ``mode="bf"``, about 1 s; 32^3 in 3D, by Jacobi-preconditioned
    conjugate gradients, where the direct solve's fill-in made it 20x slower); each voxel takes the rank its walk
    most probably reaches first."""
    from skimage.segmentation import random_walker as walk

    scalar = smoothed(image[channel], sigma)
    mode = "bf" if scalar.ndim == 2 else "cg_j"
    max_voxels = max_voxels or (256 * 256 if scalar.ndim == 2 else 32 ** 3)

    def probabilities(coarse: np.ndarray) -> np.ndarray:  # coarse: (2, *s) the scalar and the content mask
        values, inside = coarse[0], coarse[1] > 0.5
        markers = _rank_markers(values, classes, erosion, None if content is None else inside)
        if len(np.unique(markers[markers > 0])) < 2:
            return np.stack([(markers == k + 1).astype(np.float32) for k in range(classes)])
        with warnings.catch_warnings():  # scikit-image warns when the solve's probabilities leave [0, 1] by rounding
            warnings.simplefilter("ignore", UserWarning)
            found = walk(values, markers, beta=beta, mode=mode, tol=1e-3, return_full_prob=True).astype(np.float32)
        present = sorted(int(v) for v in np.unique(markers[markers > 0]))
        full = np.zeros((classes, *values.shape), np.float32)
        full[[v - 1 for v in present]] = found
        return full

    inside = np.ones(scalar.shape, np.float32) if content is None else content.astype(np.float32)
    stacked = np.stack([scalar, inside])
    ranks = on_coarse_grid(probabilities, stacked, max_voxels, channels=classes, has_channels=True).argmax(0)
    return _outside_is_rank_0(ranks.astype(np.int32), content)


def region_growing(image: np.ndarray, *, content: np.ndarray | None = None,
                   channel: int = 0, sigma: float = 1.0, polarity: str = "bright",
                   tolerance: float = 0.2, seed_fraction: float = 0.02) -> np.ndarray:
    """Two ranks: the region grown from the brightest (``polarity="bright"``) or darkest ``seed_fraction`` of the
    voxels over its connected neighbours whose value lies within ``tolerance`` (in normalised units, [0, 1]) of the
    seeds' median, and the rest (the brighter of the two is rank 1)."""
    if polarity not in ("bright", "dark"):
        raise MedsegError(f"region-growing polarity {polarity!r}", fix="use 'bright' or 'dark'")
    scalar = smoothed(image[channel], sigma)
    inside = np.ones(scalar.shape, bool) if content is None else content
    cut = np.quantile(scalar[inside], 1 - seed_fraction if polarity == "bright" else seed_fraction)
    seeds = (scalar >= cut if polarity == "bright" else scalar <= cut) & inside
    homogeneous = np.abs(scalar - np.median(scalar[seeds])) <= tolerance
    components, _ = ndimage.label(homogeneous | seeds)
    grown = np.isin(components, np.unique(components[seeds])) & inside
    return rank_by_mean(grown.astype(np.int32), image[channel:channel + 1])


def graph_cut(image: np.ndarray, *, content: np.ndarray | None = None,
              smoothness: float = 2.0, sigma: float = 0.0, seed: int = 0,
              max_voxels: int = 2_000_000) -> np.ndarray:
    """Two ranks from a binary Markov random field solved exactly by min-cut (PyMaxflow's Boykov-Kolmogorov grid
    graph): unaries are the negative log-likelihoods under a two-component Gaussian mixture of the voxels' channel
    values (scikit-learn), the pairwise term a Potts penalty ``smoothness`` between face neighbours."""
    maxflow = _optional("maxflow", "PyMaxflow")
    GaussianMixture = _optional("sklearn.mixture", "scikit-learn").GaussianMixture

    features = _voxel_features(image, sigma)
    mixture = GaussianMixture(n_components=2, covariance_type="full", random_state=seed,
                              reg_covar=1e-4).fit(_content_sample(features, content, seed))
    order = np.argsort(mixture.means_.sum(1))  # component 0 the darker
    cost = -np.log(np.clip(mixture.predict_proba(features)[:, order], 1e-12, None))  # (voxels, 2): -log p(k | x)
    cost = (cost - cost.min(1, keepdims=True)).astype(np.float32).T.reshape(2, *image.shape[1:])
    if content is not None:
        cost[1][~content] = cost.max() + 1.0  # outside the content: the dark rank

    def cut(coarse: np.ndarray) -> np.ndarray:
        graph = maxflow.Graph[float]()
        nodes = graph.add_grid_nodes(coarse.shape[1:])
        graph.add_grid_edges(nodes, smoothness)
        graph.add_grid_tedges(nodes, coarse[1], coarse[0])  # a node on the sink side (the bright rank) cuts its
        graph.maxflow()                                      # source edge: pays cost[1]; on the source side cost[0]
        return graph.get_grid_segments(nodes).astype(np.float32)[None]  # True: the sink side

    bright = on_coarse_grid(cut, cost, max_voxels, channels=1, has_channels=True)[0] > 0.5
    return _outside_is_rank_0(rank_by_mean(bright.astype(np.int32), image), content)


def _inside(scalar: np.ndarray, content: np.ndarray | None) -> np.ndarray:
    """The content voxels' values (all of them without a content mask)."""
    return scalar.ravel() if content is None or not content.any() else scalar[content]


def _thresholds(values: np.ndarray, classes: int) -> np.ndarray:
    """Otsu's threshold (two classes) or multi-Otsu's ``classes - 1`` thresholds of ``values``."""
    from skimage.filters import threshold_multiotsu, threshold_otsu

    if np.ptp(values) == 0:
        return np.array([values.max()])
    return np.array([threshold_otsu(values)]) if classes == 2 else threshold_multiotsu(values, classes=classes)


def _outside_is_rank_0(ranks: np.ndarray, content: np.ndarray | None) -> np.ndarray:
    if content is not None:
        ranks[~content] = 0
    return ranks


def _content_sample(features: np.ndarray, content: np.ndarray | None, seed: int) -> np.ndarray:
    """A seeded sample of the content voxels' rows of ``features (voxels, C)``."""
    rows = features if content is None or not content.any() else features[content.ravel()]
    return sample_voxels(rows, seed)


def _optional(module: str, package: str):
    """``module`` imported, or a MedsegError saying which package to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MedsegError(f"this classical method needs {package}, which is not installed",
                          fix=f"pip install {package} (or pip install 'medseg[classical]')") from None


def _voxel_features(image: np.ndarray, sigma: float) -> np.ndarray:
    """``(voxels, C)`` float32: every channel smoothed by ``sigma``."""
    return np.stack([smoothed(c, sigma).ravel() for c in image], axis=1).astype(np.float32)


METHODS: dict[str, RankFn] = {
    "otsu": otsu,
    "multi-otsu": multi_otsu,
    "region-growing": region_growing,
    "watershed": watershed,
    "random-walker": random_walker,
    "chan-vese": chan_vese,
    "kmeans": kmeans,
    "gmm": gmm,
    "graph-cut": graph_cut,
}

# The small search over each method's parameters on the training cases ("channel" is added for images with more
# than one channel to the methods that work on one).
SEARCH: dict[str, dict[str, list]] = {
    "otsu": {"sigma": [0.0, 1.0]},
    "multi-otsu": {"classes": [3, 4], "sigma": [0.0, 1.0]},
    "region-growing": {"polarity": ["bright", "dark"], "tolerance": [0.1, 0.2, 0.3]},
    "watershed": {"classes": [2, 3], "sigma": [0.0, 1.0]},
    "random-walker": {"classes": [2, 3], "beta": [30.0, 130.0]},
    "chan-vese": {"smoothing": [1, 3], "sigma": [0.0, 1.0]},
    "kmeans": {"clusters": [2, 3, 4], "sigma": [0.0, 1.0]},
    "gmm": {"components": [2, 3, 4], "sigma": [0.0, 1.0]},
    "graph-cut": {"smoothness": [0.5, 2.0, 8.0]},
}
SINGLE_CHANNEL = {"otsu", "multi-otsu", "region-growing", "watershed", "random-walker", "chan-vese"}


def method_function(name: str) -> RankFn:
    """The method registered as ``name``; a MedsegError listing the names otherwise."""
    if name not in METHODS:
        raise MedsegError(f"unknown classical method {name!r}", fix=f"use one of {', '.join(METHODS)}")
    return METHODS[name]
