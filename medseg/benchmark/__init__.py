"""Networks x datasets at one budget: the split, the grid runner and its summary (``medseg benchmark``)."""
