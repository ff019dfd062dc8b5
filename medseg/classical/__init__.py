"""Classical automatic segmentation as baselines (Otsu, multi-Otsu, region growing, watershed, random walker,
Chan-Vese, k-means, Gaussian mixtures, graph cut), each fitted to a dataset by a small search on its training cases
and scored like any model by ``medseg evaluate``."""

from medseg.classical.methods import METHODS, SEARCH
from medseg.classical.model import ClassicalModel, fit_classical, read_classical_model
from medseg.classical.run import MODEL_FILE, segment_with_classical

__all__ = ["METHODS", "SEARCH", "ClassicalModel", "fit_classical", "read_classical_model", "MODEL_FILE",
           "segment_with_classical"]
