"""Trust: uncertainty, calibration, dataset-shift checks, interpretability and active learning."""
