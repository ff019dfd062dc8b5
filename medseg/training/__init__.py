"""Training: the one trainer (tasks, callbacks, the budget-driven schedule), checkpoints, cross-validation splits,
and `train` end to end."""
