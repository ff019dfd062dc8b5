"""medseg: medical image segmentation, CPU-first."""

__version__ = "0.1.0"
