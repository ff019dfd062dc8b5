"""Preprocessing: crop to non-zero, resample, normalise; the memory-mappable cache."""
