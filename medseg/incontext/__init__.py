"""In-context segmentation: segment a new structure from a support set of labelled examples, with no training
(a UniverSeg-style CrossBlock network, and a Tyche-style stochastic one that gives several plausible masks)."""
