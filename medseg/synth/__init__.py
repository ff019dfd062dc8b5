"""Synthetic data: built-in example datasets generated from label maps (no download)."""
