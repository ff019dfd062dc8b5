"""Synthetic data from label maps (no download): the built-in example dataset (``shapes``) and SynthSeg-style
training images of any label maps (``synthseg``, the ``synth`` command)."""
