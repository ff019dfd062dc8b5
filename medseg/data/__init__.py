"""Datasets: the two raw layouts, validation (`check`), conversion."""

from medseg.data.layout import Case, Dataset, open_dataset, read_channels

__all__ = ["Case", "Dataset", "open_dataset", "read_channels"]
