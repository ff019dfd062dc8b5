"""Training: the budget-driven trainer, checkpoints, cross-validation splits, the model folder."""
